"""Tierhost's MCP server: the host's task queue, routing and GPU modes as MCP tools.

`build_server()` makes it; `python -m mcp_server` serves it on stdio and the daemon
mounts it at `/mcp` (streamable HTTP).
"""
