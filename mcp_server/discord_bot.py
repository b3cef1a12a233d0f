"""`tierhost discord`: the Discord bot, a thin adapter from slash commands to handlers.

The bot is one more MCP client of the daemon: it connects to `/mcp` over streamable
HTTP with the bearer token, so it can run on another box than the GPU. The handlers in
`bot_handlers` do the work; this module defers each reply, edits it as progress
arrives (at most every few seconds: Discord rate-limits edits) and attaches long
results as a file. Needs the optional extra: `pip install 'tierhost[discord]'`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Awaitable, Callable
from io import BytesIO
from typing import TYPE_CHECKING

from host.client import default_url
from mcp_server import bot_handlers
from mcp_server.clients import http_client

if TYPE_CHECKING:
    import discord

TOKEN_ENV = "DISCORD_BOT_TOKEN"
EDIT_EVERY_S = 3.0
TASK_TIMEOUT_S = 3600.0


def _throttled(
    edit: Callable[[str], Awaitable[object]], every_s: float = EDIT_EVERY_S
) -> bot_handlers.Progress:
    last = 0.0

    async def progress(message: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            await edit(f"⏳ {message}")

    return progress


async def _send(interaction: discord.Interaction, reply: bot_handlers.Reply) -> None:
    import discord

    files = []
    if reply.attachment is not None:
        data = BytesIO(reply.attachment.encode())
        files.append(discord.File(data, filename=reply.filename))
    await interaction.edit_original_response(content=reply.text, attachments=files)


def build_bot(url: str, mcp_token: str | None) -> discord.Client:
    """The Discord client with its slash commands registered."""
    import discord
    from discord import app_commands

    bot = discord.Client(intents=discord.Intents.default())
    tree = app_commands.CommandTree(bot)

    async def with_client(
        interaction: discord.Interaction,
        run: Callable[[bot_handlers.ToolCaller], Awaitable[bot_handlers.Reply]],
    ) -> None:
        await interaction.response.defer(thinking=True)
        async with http_client(url, mcp_token, read_timeout_s=TASK_TIMEOUT_S) as client:
            reply = await run(client)
        await _send(interaction, reply)

    def progress_of(interaction: discord.Interaction) -> bot_handlers.Progress:
        async def edit(text: str) -> None:
            await interaction.edit_original_response(content=text)

        return _throttled(edit)

    @tree.command(name="plan", description="Plan with the architect tier")
    async def plan(interaction: discord.Interaction, goal: str) -> None:
        progress = progress_of(interaction)
        await with_client(interaction, lambda c: bot_handlers.plan(c, goal, progress))

    @tree.command(name="build", description="Implement with the builder tier")
    async def build(interaction: discord.Interaction, what: str) -> None:
        progress = progress_of(interaction)
        await with_client(interaction, lambda c: bot_handlers.build(c, what, progress))

    @tree.command(name="task", description="A task's status and result")
    async def task(interaction: discord.Interaction, task_id: str) -> None:
        await with_client(interaction, lambda c: bot_handlers.task(c, task_id))

    @tree.command(name="mode", description="Show or set the GPU mode (auto, gaming, a tier)")
    async def mode(interaction: discord.Interaction, new_mode: str | None = None) -> None:
        await with_client(interaction, lambda c: bot_handlers.mode(c, new_mode))

    @tree.command(name="status", description="Devices, residents and queues")
    async def status(interaction: discord.Interaction) -> None:
        await with_client(interaction, bot_handlers.status)

    @bot.event
    async def on_ready() -> None:
        await tree.sync()
        print(f"tierhost discord: logged in as {bot.user}; host {url}", file=sys.stderr)

    return bot


def run(url: str | None, mcp_token: str | None) -> int:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        print(f"tierhost discord: set {TOKEN_ENV} to the bot's token", file=sys.stderr)
        return 2
    try:
        import discord  # noqa: F401 - checked here so the message names the extra
    except ImportError:
        print(
            "tierhost discord: discord.py is missing; pip install 'tierhost[discord]'",
            file=sys.stderr,
        )
        return 2
    build_bot((url or default_url()).rstrip("/"), mcp_token).run(token, log_handler=None)
    return 0
