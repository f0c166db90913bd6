from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import respx.mocks

sys.path.insert(0, str(Path(__file__).parent))

# The CLI's default store lives under $XDG_STATE_HOME: tests (and the servers
# they start as subprocesses) get a state directory of their own, never the user's.
_STATE = tempfile.mkdtemp(prefix="compat-asgi-test-state-")
os.environ["XDG_STATE_HOME"] = _STATE
atexit.register(shutil.rmtree, _STATE, ignore_errors=True)

from redis_support import redis_server  # noqa: E402
from support import serve  # noqa: E402

from compat_asgi import CompatMiddleware  # noqa: E402
from compat_asgi.demo import DemoChatApp  # noqa: E402
from compat_asgi.upstream import HTTP_CLIENT_ENV  # noqa: E402

# respx patches the httpx client rather than httpcore, so its routes answer
# whichever transport an HTTPUpstream uses (httpx's own or aiohttp's).
respx.mocks.DEFAULT_MOCKER = "httpx"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--http-client",
        choices=["httpx", "aiohttp", "auto"],
        default="httpx",
        help="transport of every HTTPUpstream left at http_client='auto', in this "
        "process and the servers it starts (default: httpx, as in a plain install)",
    )


def pytest_configure(config: pytest.Config) -> None:
    choice = config.getoption("--http-client")
    if choice == "auto":
        os.environ.pop(HTTP_CLIENT_ENV, None)
    else:
        os.environ[HTTP_CLIENT_ENV] = choice


@pytest.fixture(scope="session")
def demo_upstream() -> Iterator[str]:
    """The demo chat-completions backend on its own uvicorn server."""
    with serve(DemoChatApp()) as url:
        yield url


@pytest.fixture(scope="session", params=["in-process", "http"])
def compat_url(request: pytest.FixtureRequest, demo_upstream: str) -> Iterator[str]:
    """``/v1`` base URL of CompatMiddleware over the demo, in-process and over HTTP."""
    if request.param == "in-process":
        app = CompatMiddleware(DemoChatApp())
    else:
        app = CompatMiddleware(upstream=demo_upstream)
    with serve(app) as url:
        yield url + "/v1"


@pytest.fixture(scope="module")
def redis_port() -> Iterator[int]:
    """A redis-server of the test module's own (the store tests have theirs)."""
    with redis_server() as port:
        yield port
