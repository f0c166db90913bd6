"""The sans-io core: pure functions and state machines, no I/O, no event loop.

Nothing under ``compat_asgi.core`` imports asyncio, starlette, httpx or
uvicorn; a test enforces it.
"""
