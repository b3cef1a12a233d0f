"""The model servers the host runs or reaches: processes and their state machine,
the per-device arbiter, memory estimates, GPUs, KV slots and the warm pool."""
