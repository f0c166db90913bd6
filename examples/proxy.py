"""A standalone Responses API proxy in front of any chat-completions server.

Point it at llama.cpp's ``llama-server`` (``http://127.0.0.1:8080/v1``), vLLM
(``http://127.0.0.1:8000/v1``), Ollama's OpenAI endpoint
(``http://127.0.0.1:11434/v1``) or any OpenAI-style chat server; clients that
speak only the Responses API (Codex, the Agents SDK, ``client.responses``)
then use the proxy's ``/v1``. Every other ``/v1`` path (``/v1/models``,
``/v1/chat/completions`` ...) is forwarded as it is, streamed.

Configured from the environment, so it drops into a container or a systemd
unit unchanged:

    COMPAT_UPSTREAM      chat server base URL (required), e.g. http://127.0.0.1:8080/v1
    COMPAT_UPSTREAM_KEY  bearer key sent to the upstream instead of the client's
    COMPAT_API_KEY       key(s) clients must send, comma-separated (optional on loopback)
    HOST, PORT           where to listen (default 127.0.0.1:8000)

    COMPAT_UPSTREAM=http://127.0.0.1:8080/v1 python examples/proxy.py
    COMPAT_UPSTREAM=http://127.0.0.1:8080/v1 uvicorn examples.proxy:app   # uvicorn's own flags, workers ...
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping

from compat_asgi import CompatMiddleware


def create_app(environ: Mapping[str, str] = os.environ) -> CompatMiddleware:
    upstream = environ.get("COMPAT_UPSTREAM")
    if not upstream:
        raise SystemExit("set COMPAT_UPSTREAM to the chat server's base URL, e.g. http://127.0.0.1:8080/v1")
    api_keys = [key.strip() for key in environ.get("COMPAT_API_KEY", "").split(",") if key.strip()]
    return CompatMiddleware(
        upstream=upstream,
        upstream_key=environ.get("COMPAT_UPSTREAM_KEY") or None,
        api_keys=api_keys,
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main() -> None:
    import uvicorn

    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    if not is_loopback(host) and not os.environ.get("COMPAT_API_KEY"):
        # Anyone who can reach the port could spend the upstream's capacity
        # (and its key): refuse rather than expose it by accident.
        sys.exit(f"refusing to listen on {host} without COMPAT_API_KEY")
    # lifespan="on": the shutdown event closes the upstream connection pool.
    uvicorn.run(create_app(), host=host, port=port, lifespan="on")


# For `uvicorn examples.proxy:app`; importing it needs COMPAT_UPSTREAM set.
def __getattr__(name: str) -> CompatMiddleware:
    if name == "app":
        return create_app()
    raise AttributeError(name)


if __name__ == "__main__":
    main()
