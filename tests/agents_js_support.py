"""Running JavaScript clients against compat-asgi: the OpenAI Agents SDK for
JavaScript (npm ``@openai/agents``) and the OpenAI SDK for JavaScript it drives (``openai``).

``.ci/run`` installs the pinned packages (``PACKAGES``) into a cache directory
and points ``COMPAT_ASGI_AGENTS_JS`` at it; without CI a missing install
skips these tests with the reason, under ``CI=true`` it fails them. Each run
is one ``node tests/js/SCRIPT`` process with a timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
from support import missing

#: What ``.ci/run`` installs (``npm install -E``): the SDK, the OpenAI client it
#: drives, zod for tool schemas, and ws (Node.js 20 has no global WebSocket).
PACKAGES = ("@openai/agents@0.20.0", "openai@7.59.0", "zod@4.6.7", "ws@8.23.0")
SCRIPTS = Path(__file__).parent / "js"
RUN_TIMEOUT = 60.0


def agents_js_dir() -> Path:
    """Where the packages are installed: ``$COMPAT_ASGI_AGENTS_JS``, else the cache ``.ci/run`` fills."""
    configured = os.environ.get("COMPAT_ASGI_AGENTS_JS")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    directory = Path(configured) if configured else cache / "compat-asgi" / "agents-js"
    if shutil.which("node") is None or not (directory / "node_modules" / "@openai" / "agents").is_dir():
        missing(f"node or the Agents SDK for JavaScript is not installed in {directory}: run .ci/run, "
                f"or npm install --prefix DIR -E {' '.join(PACKAGES)} and set COMPAT_ASGI_AGENTS_JS=DIR")
    return directory


def run_js(script: str, *args: str, **env: str) -> dict[str, Any]:
    """``node tests/js/SCRIPT ARGS`` with ``env`` added; the JSON object it printed last."""
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "AGENTS_JS_DIR": str(agents_js_dir()), **env}
    try:
        done = subprocess.run(["node", str(SCRIPTS / script), *args], env=environment, stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"node ran over {RUN_TIMEOUT}s: {exc.stdout!r} {exc.stderr!r}") from None
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result: dict[str, Any] = orjson.loads(done.stdout.splitlines()[-1])
    return result


def run_agents_js(mode: str, base_url: str, *, model: str, tool: str, prompt: str) -> dict[str, Any]:
    """One Agents SDK run in ``mode`` (run, stream, websocket, conversation, compaction); its report."""
    return run_js("agents.mjs", mode, BASE_URL=base_url, MODEL=model, TOOL=tool, PROMPT=prompt)
