"""The HTTP shell: the app and its guard, the OpenAI-compatible proxy, the control,
task and routing endpoints, and body checks."""
