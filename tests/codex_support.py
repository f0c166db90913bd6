"""Running the real Codex CLI (npm ``@openai/codex``) against compat-asgi.

``.ci/run`` installs the pinned version into a cache directory and points
``COMPAT_ASGI_CODEX`` at its binary; without CI a missing binary skips the
Codex tests with the reason, under ``CI=true`` it fails them.

Each run gets its own ``CODEX_HOME`` (config.toml below), ``HOME`` and a
scratch git repository, so nothing of the user's Codex setup is read or
written, and a timeout, so a hung run fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from support import missing

from compat_asgi.types import ASGIApp, Message, Receive, Scope, Send

#: The Codex release these tests are written against (``.ci/run`` installs it).
CODEX_VERSION = "0.169.0"
RUN_TIMEOUT = 60.0




def codex_binary() -> str:
    """The ``codex`` binary: ``$COMPAT_ASGI_CODEX``, else the cache ``.ci/run`` fills."""
    configured = os.environ.get("COMPAT_ASGI_CODEX")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    candidate = Path(configured) if configured else cache / "compat-asgi" / "codex" / "node_modules" / ".bin" / "codex"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    reason = (
        f"Codex CLI not found at {candidate}: run .ci/run, or "
        f"npm i -E @openai/codex@{CODEX_VERSION} and set COMPAT_ASGI_CODEX to its bin/codex"
    )
    missing(reason)


def config_toml(base_url: str, *, model: str = "demo", env_key: str | None = None, websockets: bool = False) -> str:
    """What a user puts in ``~/.codex/config.toml`` (the README shows the same),
    plus retries off so a failure shows at once and no update check or
    analytics (no network here beyond 127.0.0.1)."""
    provider_lines = f'env_key = "{env_key}"\n' if env_key else ""
    if websockets:  # Responses WebSocket mode on /v1/responses, HTTP only as Codex's fallback
        provider_lines += "supports_websockets = true\n"
    return f"""\
model = "{model}"
model_provider = "compat"
approval_policy = "never"
sandbox_mode = "workspace-write"
check_for_update_on_startup = false

[analytics]
enabled = false

[model_providers.compat]
name = "compat-asgi"
base_url = "{base_url}/v1"
wire_api = "responses"
{provider_lines}request_max_retries = 0
stream_max_retries = 0
"""


@dataclass
class CodexRun:
    """One ``codex exec --json`` run: its exit status and its JSON events."""

    returncode: int
    events: list[dict[str, Any]]
    stderr: str

    def items(self, kind: str) -> list[dict[str, Any]]:
        """Completed items of one type (``agent_message``, ``command_execution`` ...)."""
        return [
            e["item"] for e in self.events if e.get("type") == "item.completed" and e["item"].get("type") == kind
        ]

    @property
    def answer(self) -> str:
        messages = self.items("agent_message")
        return str(messages[-1]["text"]) if messages else ""

    def assert_ok(self) -> None:
        """The turn completed without an error event (Codex prints the server's
        error envelope in ``error`` / ``turn.failed`` events)."""
        failures = [e for e in self.events if e.get("type") in ("error", "turn.failed")]
        assert self.returncode == 0 and not failures, (self.returncode, failures, self.stderr[-2000:])
        assert any(e.get("type") == "turn.completed" for e in self.events), self.events


@dataclass
class Workspace:
    """A scratch git repository and a private ``CODEX_HOME`` for Codex runs."""

    root: Path
    base_url: str
    model: str = "demo"
    env: dict[str, str] = field(default_factory=dict)
    #: Name of the variable Codex reads the server's ``--api-key`` from.
    env_key: str | None = None
    #: Talk to the server over one WebSocket (Codex's ``supports_websockets``).
    websockets: bool = False

    def __post_init__(self) -> None:
        self.repo = self.root / "repo"
        self.home = self.root / "codex-home"
        self.repo.mkdir(parents=True)
        self.home.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", str(self.repo)], check=True, timeout=30)
        (self.home / "config.toml").write_text(config_toml(self.base_url, model=self.model, env_key=self.env_key, websockets=self.websockets))

    def exec(self, *args: str) -> CodexRun:
        """``codex exec --json ... args`` in the repository; stdin closed (Codex
        would otherwise wait for more prompt), ``RUN_TIMEOUT`` seconds at most."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "CODEX_HOME": str(self.home),
            "NO_COLOR": "1",
            **self.env,
        }
        command = [codex_binary(), "exec", "--json", "--skip-git-repo-check", "-C", str(self.repo), *args]
        # The subcommand (resume) must come right after "exec".
        if args and args[0] == "resume":
            command = [codex_binary(), "exec", "resume", "--json", "--skip-git-repo-check", *args[1:]]
        try:
            done = subprocess.run(
                command,
                cwd=self.repo,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=RUN_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"codex exec ran over {RUN_TIMEOUT}s: {exc.stdout!r} {exc.stderr!r}") from None
        events = [orjson.loads(line) for line in done.stdout.splitlines() if line.startswith(b"{")]
        return CodexRun(done.returncode, events, done.stderr.decode(errors="replace"))


@dataclass
class Exchange:
    """One HTTP request the server got, and what it answered."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""

    def json(self) -> Any:
        return orjson.loads(self.body)


class Recorder:
    """Raw ASGI wrapper that keeps every request body and response it
    passes on: the server side of each Codex run, to assert on and to replay.
    Bodies are forwarded message by message, unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    def responses(self) -> list[Exchange]:
        """The ``POST /v1/responses`` requests, in order."""
        return [x for x in self.exchanges if x.method == "POST" and x.path.endswith("/responses")]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(
            scope["method"],
            scope["path"],
            {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
            b"",
        )
        self.exchanges.append(exchange)
        parts: list[bytes] = []

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                parts.append(message.get("body", b""))
                exchange.body = b"".join(parts)
            return message

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                exchange.response_headers = {
                    k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])
                }
            elif message["type"] == "http.response.body":
                exchange.response_body += message.get("body", b"")
            await send(message)

        await self.app(scope, recording_receive, recording_send)  # type: ignore[arg-type]
