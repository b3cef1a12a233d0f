"""The one MCP result that is not the daemon's answer as it is: the host's status with
the address of the host that gave it.

Everything else the MCP tools take or return is the HTTP contract itself, in
`host.wire`; this module keeps only what the MCP server adds to it.
"""

from __future__ import annotations

from host import wire


# `url` and `daemon` are not in the daemon's `/api/status`: the MCP server adds them,
# because an agent may be linked to a host it did not start and should be able to say
# which one answered, and whether this session started it. The
# class keeps the name and docstring of the daemon's shape: they are the title and the
# description of `host_status`'s published output schema.
class HostStatus(wire.HostStatus):
    """Devices with their residents and queues, every model's state, task counts."""

    url: str
    daemon: str
    """`attached <url>`, or `started by tierhost mcp on <url> (pid N)` when `tierhost mcp`
    found no daemon and started one of its own: an agent (and its user) should know when
    the tasks and routing it sees belong to a daemon nobody else is using."""
