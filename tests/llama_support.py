"""A real llama.cpp ``llama-server`` for tests, serving a tiny generated model.

The binary comes from ``scripts/build_llama_server.sh`` (built once per machine
from the llama-cpp-python sdist, cached outside the work tree) or from
``$LLAMA_SERVER``. Without it the real-backend tests skip locally and fail
under ``CI=true``, so CI can never pass them silently.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from support import free_port, missing

from tiny_gguf import write_model

LLAMA_VERSION = "0.3.36"  # llama-cpp-python sdist whose vendored llama.cpp is built
START_TIMEOUT = 60.0
CONTEXT = 4096  # tokens per slot (the prompt is one token per byte); the overflow test sends more
SLOTS = 2

HERMES_TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"  # ChatML with Hermes <tool_call> blocks
QWEN3_TEMPLATE = "Qwen-Qwen3-0.6B.jinja"  # the same, plus <think> reasoning


def llama_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("COMPAT_ASGI_LLAMA_DIR") or Path(cache) / "compat-asgi" / "llama" / LLAMA_VERSION)


def llama_server_binary() -> Path:
    path = Path(os.environ.get("LLAMA_SERVER") or llama_dir() / "llama-server")
    templates = [llama_dir() / "templates" / name for name in (HERMES_TEMPLATE, QWEN3_TEMPLATE)]
    if not path.is_file() or not all(t.is_file() for t in templates):
        reason = f"llama-server or its templates are not built ({path}); run scripts/build_llama_server.sh"
        missing(reason)
    return path




def _wait(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up:\n" + log.read_text(errors="replace")[-4000:])
        time.sleep(0.1)


@contextlib.contextmanager
def _process(args: list[str], ready_url: str, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait(ready_url, process, log)
        yield
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def llama_server(workdir: Path, *, thinking: bool, context: int = CONTEXT) -> Iterator[str]:
    """llama-server on a free 127.0.0.1 port with a tiny model and ``context``
    tokens per slot; yields its base URL (no /v1)."""
    binary = llama_server_binary()
    template = (llama_dir() / "templates" / (QWEN3_TEMPLATE if thinking else HERMES_TEMPLATE)).read_text()
    name = "qwen3" if thinking else "hermes"
    model = write_model(workdir / f"tiny-{name}.gguf", template, thinking=thinking, context_length=context)
    port = free_port()
    args = [
        str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--jinja", "-c", str(context * SLOTS), "-np", str(SLOTS), "-t", "1", "--slots", "--metrics",
        "--alias", f"tiny-{name}", "--no-warmup",
    ]
    url = f"http://127.0.0.1:{port}"
    with _process(args, url + "/health", workdir / f"llama-{name}.log"):
        yield url


@contextlib.contextmanager
def compat_server(upstream: str, workdir: Path) -> Iterator[str]:
    """``compat-asgi serve --upstream`` in front of ``upstream``; yields its /v1 base URL."""
    port = free_port()
    args = [
        sys.executable, "-m", "compat_asgi", "serve", "--port", str(port), "--upstream", upstream + "/v1",
        "--store", "memory", "--log-level", "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with _process(args, url + "/v1/models", workdir / f"compat-{port}.log"):
        yield url + "/v1"
