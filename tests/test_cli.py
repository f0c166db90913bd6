"""``compat-asgi serve`` as a user runs it: a real process on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from support import TRANSPORTS, serve_command

from compat_asgi.cli import main


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The default SQLite store lives under $XDG_STATE_HOME: keep the user's
    (and another checkout's, maybe of a newer schema) out of these tests."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))




@contextmanager
def cli_server(*args: str) -> Iterator[str]:
    with serve_command("--log-level", "warning", *args) as served:
        yield served.url + "/v1"


def test_serve_runs_the_demo_backend_by_default() -> None:
    with cli_server() as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        assert client.responses.create(model="demo", input="hi").output_text.startswith("Hello!")
        with client.responses.stream(model="demo", input="hi") as stream:
            assert stream.get_final_response().status == "completed"


def test_serve_with_upstream_translates_for_a_chat_server(demo_upstream: str) -> None:
    with cli_server("--upstream", demo_upstream + "/v1") as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        assert client.responses.create(model="demo", input="via http").output_text.startswith(
            "Hello! You said: via http."
        )
        # Other /v1 paths are proxied to the upstream as they are.
        assert [m.id for m in client.models.list()] == ["demo", "demo-reasoning"]
        chat = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
        assert chat.choices[0].message.content is not None


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_serve_picks_its_upstream_client_and_server_stack(demo_upstream: str, transport: str) -> None:
    fast = ("--loop", "uvloop", "--http", "httptools") if importlib.util.find_spec("uvloop") and importlib.util.find_spec("httptools") else ()
    with cli_server("--upstream", demo_upstream + "/v1", "--http-client", transport, *fast) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        with client.responses.stream(model="demo", input="fast") as stream:
            assert stream.get_final_response().output_text.startswith("Hello! You said: fast.")


def test_workers_share_state_through_sqlite(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    with cli_server("--workers", "2", "--store", store) as base_url:
        client = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)
        previous = None
        for turn in range(8):  # new connections each time: both workers get some
            fresh = openai.OpenAI(base_url=base_url, api_key="x", max_retries=0, http_client=None)
            response = fresh.responses.create(model="demo", input=f"turn {turn}", previous_response_id=previous)
            previous = response.id
        assert client.responses.input_items.list(previous).data[0].content[0].text == "turn 7"  # type: ignore[union-attr]


def test_bad_arguments_exit_with_status_2(capsys: object) -> None:
    assert main(["serve", "--upstream-timeout", "0"]) == 2
    assert main(["serve", "--upstream", "ftp://nowhere"]) == 2
    assert main(["serve", "--workers", "2", "--store", "memory"]) == 2
    if importlib.util.find_spec("httpx_aiohttp") is None:
        assert main(["serve", "--upstream", "http://127.0.0.1:1/v1", "--http-client", "aiohttp"]) == 2


def _serve_and_read_stderr(*args: str, requests: int = 1) -> list[str]:
    """Start ``compat-asgi serve`` as a user would (default log level), send
    ``requests`` requests, stop it and return what it wrote to stderr."""
    with serve_command(*args) as served:
        for _ in range(requests):
            # An unknown parameter (a 400 the user must be able to see) and
            # a path with a newline and a quote in it (percent-encoded).
            httpx.post(served.url + "/v1/responses", json={"model": "demo", "input": "hi", "bogus\n": 1})
            httpx.get(served.url + '/v1/responses/x%0Ainjected%22line')
    return served.stderr


def test_serve_prints_one_access_line_per_request_to_stderr() -> None:
    lines = _serve_and_read_stderr()
    access = [line for line in lines if line.startswith(("POST ", "GET "))]
    # /healthz polling is outside /v1 and may appear; the two API requests must.
    posted = [line for line in access if line.startswith("POST /v1/responses ")]
    assert len(posted) == 1 and " model=demo " in posted[0] and " id=req_" in posted[0]
    # The unknown field was accepted and named; its newline split no line.
    assert posted[0].startswith("POST /v1/responses 200 ") and " ignored=" in posted[0] and "bogus" in posted[0]
    fetched = [line for line in access if line.startswith('GET "/v1/responses/x\\ninjected\\"line" 400 ')]
    assert len(fetched) == 1, lines
    # The client's newline stayed escaped: no line starts with what followed it.
    assert not any(line.startswith("injected") for line in lines)


def test_serve_access_log_as_json_and_off() -> None:
    records = [json.loads(line) for line in _serve_and_read_stderr("--access-log", "json") if line.startswith("{")]
    paths = [r["path"] for r in records if r["path"].startswith("/v1/")]
    assert paths == ["/v1/responses", '/v1/responses/x\ninjected"line']
    assert {r["method"] for r in records} >= {"POST", "GET"} and all("request_id" in r for r in records)
    quiet = _serve_and_read_stderr("--access-log", "off")
    assert not any("/v1/responses" in line for line in quiet)
    # uvicorn's rule: a log level above info silences access lines too.
    assert not any("/v1/responses" in line for line in _serve_and_read_stderr("--log-level", "warning"))


def test_serve_workers_print_the_access_log(tmp_path: Path) -> None:
    # Worker processes build their own app and logging: each must print too.
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    lines = _serve_and_read_stderr("--workers", "2", "--store", store, requests=4)
    assert sum(line.startswith("POST /v1/responses 200 ") for line in lines) == 4, lines
    assert all(" ignored=" in line for line in lines if line.startswith("POST /v1/responses"))


def test_strict_refuses_what_the_default_ignores() -> None:
    body = {"model": "demo", "input": "hi", "client_metadata": {"x": "1"}, "tools": [{"type": "web_search"}]}
    with cli_server() as base_url:
        tolerant = httpx.post(base_url + "/responses", json=body)
    assert tolerant.status_code == 200
    assert set(tolerant.headers["x-compat-ignored"].split(",")) == {"client_metadata", "tools[web_search]"}
    with cli_server("--strict") as base_url:
        refused = httpx.post(base_url + "/responses", json=body)
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "client_metadata"
        # --drop-unsupported-tools keeps leaving hosted tools out in strict mode.
        hosted = {k: v for k, v in body.items() if k != "client_metadata"}
        assert httpx.post(base_url + "/responses", json=hosted).status_code == 400
    with cli_server("--strict", "--drop-unsupported-tools") as base_url:
        assert httpx.post(base_url + "/responses", json=hosted).status_code == 200


LARGE_BLOCKS = """
import ctypes, sys
from compat_asgi.cli import release_large_blocks
print(release_large_blocks())
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
first = b"x" * (4 << 20)
del first  # by default glibc now raises its mmap threshold past 4 MiB
before = libc.mallinfo2().hblks
answer = b"x" * (1 << 20)
print(libc.mallinfo2().hblks - before)  # 1: the block has its own mapping, 0: it is on the heap
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator only")
@pytest.mark.parametrize(("env", "expected"), [({}, "True\n1\n"), ({"MALLOC_MMAP_THRESHOLD_": "8388608"}, "False\n0\n")])
def test_serve_keeps_large_blocks_returnable_to_the_system(env: dict[str, str], expected: str) -> None:
    """The serving process keeps blocks of 128 KiB and more mapped on their own
    (freed, they go back to the system) unless the user set glibc's variable."""
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    done = subprocess.run([sys.executable, "-c", LARGE_BLOCKS], env={**environment, **env}, capture_output=True, text=True, timeout=30)
    assert done.stdout == expected, done.stderr
