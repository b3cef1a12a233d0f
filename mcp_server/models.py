"""The one MCP result that is not the daemon's answer as it is: the host's status with
the address of the host that gave it.

Everything else the MCP tools take or return is the HTTP contract itself, in
`host.wire`; this module keeps only what the MCP server adds to it.
"""

from __future__ import annotations

from host import wire


# `url` is not in the daemon's `/api/status`: the MCP server adds it, because an agent may
# be linked to a host it did not start and should be able to say which one answered. The
# class keeps the name and docstring of the daemon's shape: they are the title and the
# description of `host_status`'s published output schema.
class HostStatus(wire.HostStatus):
    """Devices with their residents and queues, every model's state, task counts."""

    url: str
