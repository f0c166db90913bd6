"""``compat-asgi serve`` as a user runs it: a real process on 127.0.0.1."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai

from compat_asgi.cli import main


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def cli_server(*args: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "compat_asgi", "serve", "--port", str(port), "--log-level", "warning",
         *(args if "--store" in args else ("--store", "memory", *args))],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                httpx.get(url + "/v1/models", timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(process.stdout.read().decode() if process.stdout else "no output")
                time.sleep(0.05)
        yield url + "/v1"
    finally:
        process.terminate()
        process.wait(10)


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
