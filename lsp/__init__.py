"""Tierhost's LSP bridge: the editor's selection goes to the host, the answer comes back.

A thin pygls client of the daemon (`host.client.HostClient`): `python -m lsp` or
`tierhost lsp` serves it on stdio (or `--tcp`). Modules, one job each:

- `framing`    LSP frames on a byte stream: bodies out, bad frames refused (pure)
- `messages`   what a frame's body must be, and the JSON-RPC error when it is not (pure)
- `transport`  the read loop on stdio / TCP: frames → pygls, refusals answered
- `paths`      where the bridge may read (workspace folders) and write (`.tierhost/`)
- `arguments`  what a `workspace/executeCommand` carries, checked, with clear errors
- `prompts`    which task type and prompt each command sends, and the editor context
- `progress`   following a task in the host as work-done progress, cancellable
- `results`    task results → Markdown documents, workspace edits, diagnostics (pure)
- `diff`       unified diffs → text edits (pure)
- `status`     the GPU mode and resident models → the `tierhost/status` notification
- `commands`   the command handlers that tie the above together
- `server`     the pygls wiring: capabilities, code actions, command registration
- `main`       the command line: find or start the daemon, then serve
"""
