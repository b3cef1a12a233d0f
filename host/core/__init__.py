"""The functional core: pure decisions over plain values (no I/O, no asyncio, no
clock), each module one policy, tested as tables and properties."""
