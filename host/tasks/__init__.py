"""Queued work: the dispatcher that starts tasks, the validation loop, and the checks
it runs over generated code."""
