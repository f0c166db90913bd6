from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from support import serve  # noqa: E402

from compat_asgi import CompatMiddleware  # noqa: E402
from compat_asgi.demo import DemoChatApp  # noqa: E402


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
