"""A bounded soak: concurrent streaming clients against real uvicorn servers.

Small by default so CI runs it; scale with SOAK_CLIENTS / SOAK_REQUESTS.
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import Iterator

import httpx
import pytest
from support import serve

from compat_asgi import CompatMiddleware
from compat_asgi.validate import validate_responses_sse

CLIENTS = int(os.environ.get("SOAK_CLIENTS", "8"))
REQUESTS = int(os.environ.get("SOAK_REQUESTS", "6"))
RSS_GROWTH_LIMIT = 40 << 20  # bytes


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


@pytest.fixture(scope="module")
def compat_over_http(demo_upstream: str) -> Iterator[str]:
    with serve(CompatMiddleware(upstream=demo_upstream)) as url:
        yield url + "/v1/responses"


@pytest.mark.soak
def test_concurrent_streams_stay_valid_and_memory_stays_bounded(compat_over_http: str) -> None:
    body = {"model": "demo", "input": "soak " * 50, "stream": True,
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]}

    async def client(n: int, http: httpx.AsyncClient) -> list[str]:
        problems = []
        for i in range(REQUESTS):
            prompt = "use get_weather in Paris" if (n + i) % 2 else "soak " * 50
            response = await http.post(compat_over_http, json={**body, "input": prompt})
            if response.status_code != 200:
                problems.append(f"status {response.status_code}")
                continue
            problems += [str(v) for v in validate_responses_sse(response.content)]
        return problems

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=30) as http:
            results = await asyncio.wait_for(asyncio.gather(*(client(n, http) for n in range(CLIENTS))), 120)
        return [p for problems in results for p in problems]

    assert asyncio.run(run()) == []  # warm-up round: pools, caches, first imports
    before = rss()
    assert asyncio.run(run()) == []
    assert rss() - before < RSS_GROWTH_LIMIT
