"""(5) Import time of ``compat_asgi`` and start-up time of ``compat-asgi serve``.

Import: ``python -X importtime -c "import compat_asgi.middleware"``, the
cumulative time the interpreter reports for what ``CompatMiddleware`` needs
(its dependencies included; the package itself loads its names lazily),
best of several fresh interpreters. Start-up: from spawning
``python -m compat_asgi serve`` (what the ``compat-asgi`` script runs) until
it answers ``GET /v1/models``, against the same for a bare uvicorn serving
the benchmark's tiny app.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time

from benchmarks.common import Config
from benchmarks.procs import REPO, Server, free_port
from benchmarks.report import Results, Row

TARGET_IMPORT_MS = 150.0


def import_ms(module: str) -> float:
    """Cumulative import time of ``module`` in a fresh interpreter, in ms."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for line in done.stderr.splitlines():
        parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
        if len(parts) == 3 and parts[2] == module:
            return int(parts[1]) / 1000
    raise RuntimeError(f"no import time reported for {module}")


def interpreter_ms() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, timeout=60)
    return (time.perf_counter() - start) * 1000


def serve_ms(argv: list[str], path: str) -> float:
    # Its default response store is SQLite under $XDG_STATE_HOME: keep it out of the user's home.
    with tempfile.TemporaryDirectory() as state:
        port = int(argv[argv.index("--port") + 1])
        with Server([sys.executable, *argv], port, ready_path=path, env={"XDG_STATE_HOME": state}) as server:
            return server.startup_seconds * 1000


def run(cfg: Config, results: Results) -> None:
    runs = cfg.pick(2, 7)
    imports = sorted(import_ms("compat_asgi.middleware") for _ in range(runs))
    package = min(import_ms("compat_asgi") for _ in range(runs))
    bare = min(interpreter_ms() for _ in range(runs))
    ms = imports[0]
    results.add(
        Row(
            "5a",
            "import compat_asgi.middleware",
            ms,
            "ms",
            f"< {TARGET_IMPORT_MS:.0f} ms",
            ms < TARGET_IMPORT_MS,
            f"median {imports[len(imports) // 2]:.1f} ms; bare `import compat_asgi` {package:.1f} ms; "
            f"interpreter start {bare:.1f} ms",
        )
    )
    serve = []
    plain = []
    for _ in range(cfg.pick(1, 5)):
        serve.append(
            serve_ms(
                ["-m", "compat_asgi", "serve", "--port", str(free_port()), "--log-level", "warning"],
                "/v1/models",
            )
        )
        plain.append(serve_ms(["-m", "benchmarks.serve", "upstream", "--port", str(free_port())], "/health"))
    results.add(
        Row(
            "5b",
            "compat-asgi serve start-up, until it answers",
            min(serve),
            "ms",
            "info",
            None,
            f"{min(serve) / min(plain):.2f}x a bare uvicorn app ({min(plain):.0f} ms)",
        )
    )
