"""Background responses driven by the real OpenAI SDK against uvicorn, on every
store backend; across two server processes sharing Redis; and a server killed
mid-run coming back with that response failed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from redis_support import redis_command, redis_server
from support import free_port, serve

from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.endpoints.background import POLL_INTERVAL
from compat_asgi.store.base import StoredResponse
from compat_asgi.store.memory import MemoryStore
from compat_asgi.types import Message, Receive, Scope, Send
from compat_asgi.validate import assert_valid, parse_sse, validate_responses_sse

WORD_DELAY = 0.05  # the demo's pause between words: a run lasts a few seconds
RUNNING = ("queued", "in_progress")
LONG = "Tell me a long story: " + "and then " * 25  # the demo echoes it: a run of several seconds


class WatchedDemo:
    """The slow demo backend, noting how many chunks each stream sent and whether it ended."""

    def __init__(self) -> None:
        self.demo = DemoChatApp(word_delay=WORD_DELAY)
        self.chunks: list[int] = []
        self.ended: list[bool] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/chat/completions"):
            await self.demo(scope, receive, send)
            return
        index = len(self.chunks)
        self.chunks.append(0)
        self.ended.append(False)

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                self.chunks[index] += 1
            await send(message)

        try:
            await self.demo(scope, receive, counted)
        finally:
            self.ended[index] = True


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as port:
        yield f"redis://127.0.0.1:{port}/0"


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        return url
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return "memory"


@pytest.fixture
def demo() -> WatchedDemo:
    return WatchedDemo()


@pytest.fixture
def server(store_url: str, demo: WatchedDemo) -> Iterator[str]:
    with serve(CompatMiddleware(demo, store=store_url, max_background_runs=2)) as url:
        yield url + "/v1"


def sdk(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key="x", max_retries=0)


def wait_for(client: openai.OpenAI, response_id: str, *, until: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if until(response) or time.monotonic() > deadline:
            return response
        time.sleep(0.05)


def events_of(stream: Any) -> list[dict[str, Any]]:
    return [event.model_dump(mode="json", exclude_unset=True) for event in stream]


def parse_data(raw: bytes) -> list[str]:
    return [data for _, data in parse_sse(raw)]


def raw_stream(base_url: str, response_id: str, starting_after: int | None = None) -> bytes:
    """The stored stream's bytes as served (the SDK's models turn integer times into floats)."""
    params: dict[str, Any] = {"stream": "true"}
    if starting_after is not None:
        params["starting_after"] = starting_after
    return httpx.get(f"{base_url}/responses/{response_id}", params=params, timeout=30).content


def test_background_create_returns_at_once_and_completes(server: str) -> None:
    client = sdk(server)
    created = client.responses.create(model="demo", input="Tell me a story.", background=True)
    assert created.status == "queued" and created.background is True and created.output == []
    done = wait_for(client, created.id, until=lambda r: r.status not in RUNNING)
    assert done.status == "completed" and done.background is True
    assert "Tell me a story." in done.output_text
    events = events_of(client.responses.retrieve(created.id, stream=True))
    assert events[-1]["response"]["id"] == created.id
    assert_valid(validate_responses_sse(raw_stream(server, created.id)))


def test_follow_live_then_drop_and_resume_after_the_last_event_seen(server: str) -> None:
    client = sdk(server)
    created = client.responses.create(model="demo", input=LONG, background=True)
    seen: list[dict[str, Any]] = []
    with client.responses.retrieve(created.id, stream=True) as stream:
        for event in stream:
            seen.append(event.model_dump(mode="json", exclude_unset=True))
            if len(seen) == 6:
                break  # the client drops its connection mid-run
    running = client.responses.retrieve(created.id)
    assert running.status == "in_progress"  # the drop did not stop the run
    rest = events_of(client.responses.retrieve(created.id, stream=True, starting_after=seen[-1]["sequence_number"]))
    events = seen + rest
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[-1]["type"] == "response.completed"
    whole = raw_stream(server, created.id)
    assert_valid(validate_responses_sse(whole))
    assert [e["type"] for e in events] == [e["type"] for e in map(orjson.loads, parse_data(whole))]


def test_background_stream_true_streams_the_run(server: str) -> None:
    client = sdk(server)
    body = {"model": "demo", "input": "Hi", "background": True, "stream": True}
    raw = httpx.post(server + "/responses", json=body, timeout=30).content
    assert_valid(validate_responses_sse(raw))
    events = events_of(client.responses.create(model="demo", input="Hi", background=True, stream=True))
    assert events[-1]["type"] == "response.completed"
    response_id = events[0]["response"]["id"]
    assert client.responses.retrieve(response_id).status == "completed"


def test_the_run_outlives_the_client_that_started_it(server: str) -> None:
    body = {"model": "demo", "input": "Tell me a story.", "background": True, "stream": True}
    with httpx.Client(timeout=10) as http, http.stream("POST", server + "/responses", json=body) as raw:
        first = next(line for line in raw.iter_lines() if line.startswith("data:"))
    response_id = orjson.loads(first[5:])["response"]["id"]
    done = wait_for(sdk(server), response_id, until=lambda r: r.status not in RUNNING)
    assert done.status == "completed" and done.output_text


def test_cancel_stops_the_upstream_and_ends_cancelled(server: str, demo: WatchedDemo) -> None:
    client = sdk(server)
    created = client.responses.create(model="demo", input=LONG, background=True)
    wait_for(client, created.id, until=lambda r: r.status == "in_progress")
    cancelled = client.responses.cancel(created.id)
    assert cancelled.id == created.id and cancelled.status == "cancelled"
    assert client.responses.retrieve(created.id).status == "cancelled"
    sent = demo.chunks[-1]
    time.sleep(3 * WORD_DELAY)
    assert demo.ended[-1] and demo.chunks[-1] == sent  # the upstream stream was stopped
    # Cancelling again is harmless; a stored foreground response cannot be cancelled.
    assert client.responses.cancel(created.id).status == "cancelled"
    plain = client.responses.create(model="demo", input="hi")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(plain.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_missing")


def test_a_run_past_the_recording_cap_keeps_only_its_latest_events() -> None:
    """``max_recorded_events`` bounds a run's events in memory as it bounds a
    stored stream: a follower that keeps up gets every event, the run is
    stored without them, and replaying it from the start is refused."""
    demo = WatchedDemo()
    with serve(CompatMiddleware(demo, store="memory", max_recorded_events=4000)) as url:
        client = sdk(url + "/v1")
        body = {"model": "demo", "input": LONG, "background": True, "stream": True}
        raw = httpx.post(url + "/v1/responses", json=body, timeout=30).content
        assert len(raw) > 3 * 4000
        assert_valid(validate_responses_sse(raw))
        events = [orjson.loads(data) for data in parse_data(raw)]
        assert events[-1]["type"] == "response.completed"
        response_id = events[-1]["response"]["id"]
        done = client.responses.retrieve(response_id)
        assert done.status == "completed" and "and then" in done.output_text
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.retrieve(response_id, stream=True)
        assert caught.value.body["param"] == "stream"  # type: ignore[index]
        # While it runs, its first events are already gone from memory too.
        running = client.responses.create(model="demo", input=LONG, background=True)
        wait_for(client, running.id, until=lambda r: len(r.output) > 0 or r.status not in RUNNING)
        time.sleep(20 * WORD_DELAY)
        with pytest.raises(openai.BadRequestError):
            client.responses.retrieve(running.id, stream=True)
        client.responses.cancel(running.id)


def test_each_batch_of_a_run_is_encoded_once(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run's batches reach followers and the store as the same bytes,
    encoded once: the translator's recording hands its encoding on."""
    from compat_asgi.endpoints import background, responses

    encoded: list[int] = []

    def counting(events: list[dict[str, Any]]) -> bytes:
        encoded.append(len(events))
        return responses.encode_events(events)

    monkeypatch.setattr(background, "encode_events", counting)
    client = sdk(server)
    started = client.responses.create(model="demo", input="hi", background=True)
    done = wait_for(client, started.id, until=lambda r: r.status not in RUNNING)
    assert done.status == "completed"
    followed = list(client.responses.retrieve(started.id, stream=True))
    assert followed[-1].type == "response.completed"
    assert encoded == []  # background.py encoded none of them itself


class CancelLosingStore(MemoryStore):
    """A store that loses the cancellations reaching it, as redis-py's commands
    do on Python 3.11 (``asyncio.wait_for`` hands back the finished command and
    drops the cancel): the run's second progress write waits for the cancel and
    swallows it, once the run's lease renewer sits in a flag read that will
    swallow its own."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_writes = 0
        self.lost = False
        self.renewer_waiting = asyncio.Event()
        self.flag_reads = 0

    async def save(self, record: StoredResponse) -> None:
        if record.response.get("status") == "in_progress":
            self.progress_writes += 1
            if self.progress_writes == 2:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(30)
                self.lost = True
                await self.renewer_waiting.wait()
        await super().save(record)

    async def get_flag(self, key: str) -> bytes | None:
        self.flag_reads += 1
        if self.lost:
            self.renewer_waiting.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(30)
        return await super().get_flag(key)


def test_a_cancel_lost_inside_the_store_still_stops_the_run() -> None:
    demo, store = WatchedDemo(), CancelLosingStore()
    with serve(CompatMiddleware(demo, store=store)) as url:
        client = sdk(url + "/v1")
        created = client.responses.create(model="demo", input=LONG, background=True)
        wait_for(client, created.id, until=lambda r: store.progress_writes == 2)  # the run waits in the store
        started = time.monotonic()
        assert client.responses.cancel(created.id).status == "cancelled"
        assert time.monotonic() - started < 2  # stopped, not run out to its end
        assert demo.ended[-1]
        assert store.lost
        reads = store.flag_reads
        time.sleep(3 * POLL_INTERVAL)
        assert store.flag_reads == reads  # the run's lease renewer stopped with it


def test_running_background_work_is_bounded(server: str) -> None:
    client = sdk(server)
    first = [client.responses.create(model="demo", input="Tell me a story.", background=True) for _ in range(2)]
    with pytest.raises(openai.InternalServerError) as caught:
        client.responses.create(model="demo", input="one too many", background=True)
    assert caught.value.status_code == 503
    for created in first:
        client.responses.cancel(created.id)


@pytest.mark.parametrize("store_url", ["memory"], indirect=True)
def test_background_needs_store_true(server: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(server).responses.create(model="demo", input="x", background=True, store=False)
    assert caught.value.body["param"] == "store"  # type: ignore[index]


def test_background_without_a_store_is_refused() -> None:
    with serve(CompatMiddleware(DemoChatApp())) as url:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk(url + "/v1").responses.create(model="demo", input="x", background=True)
    assert caught.value.body["param"] == "background"  # type: ignore[index]


def test_async_sdk_follows_a_run(server: str) -> None:
    async def main() -> list[dict[str, Any]]:
        client = openai.AsyncOpenAI(base_url=server, api_key="x", max_retries=0)
        created = await client.responses.create(model="demo", input="Hi there", background=True)
        stream = await client.responses.retrieve(created.id, stream=True, starting_after=1)
        return [event.model_dump(mode="json", exclude_unset=True) async for event in stream]

    events = asyncio.run(main())
    assert events[0]["sequence_number"] == 2 and events[-1]["type"] == "response.completed"


# -- separate server processes -----------------------------------------------------

SERVER = """
import os, uvicorn
from compat_asgi import CompatMiddleware
from compat_asgi.demo import DemoChatApp
from compat_asgi.endpoints.background import POLL_INTERVAL
app = CompatMiddleware(
    DemoChatApp(word_delay=float(os.environ["DEMO_WORD_DELAY"])),
    store=os.environ["STORE_URL"],
    background_lease=float(os.environ["LEASE"]),
)
uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning")
"""
LEASE = 1.0


@contextlib.contextmanager
def server_process(store_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``CompatMiddleware`` with a slow demo in its own process; yields its base URL and process."""
    port = free_port()
    env = {
        **os.environ,
        "STORE_URL": store_url,
        "PORT": str(port),
        "LEASE": str(LEASE),
        "DEMO_WORD_DELAY": str(WORD_DELAY),
    }
    proc = subprocess.Popen([sys.executable, "-c", SERVER], env=env)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server process did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_two_workers_follow_and_cancel_each_others_runs(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        store_url: str = request.getfixturevalue("redis_url")
        redis_command(int(store_url.rsplit(":", 1)[1].split("/")[0]), "FLUSHALL")
    else:
        store_url = f"sqlite:///{tmp_path / 'store.db'}"  # two processes on one host share the file
    with server_process(store_url) as (first, _), server_process(store_url) as (second, _):
        one, two = sdk(first), sdk(second)
        # Started on one worker, followed from the start on the other, live.
        created = one.responses.create(model="demo", input="Tell me a story.", background=True)
        events = events_of(two.responses.retrieve(created.id, stream=True))
        assert events[-1]["response"]["id"] == created.id and events[-1]["type"] == "response.completed"
        assert_valid(validate_responses_sse(raw_stream(second, created.id)))
        # Started on one worker, cancelled through the other: the run stops.
        created = one.responses.create(model="demo", input=LONG, background=True)
        wait_for(two, created.id, until=lambda r: r.status == "in_progress")
        cancelled = two.responses.cancel(created.id)
        assert cancelled.status == "cancelled"
        settled = one.responses.retrieve(created.id)
        assert settled.status == "cancelled"
        time.sleep(3 * WORD_DELAY)  # a stopped run writes nothing more
        assert one.responses.retrieve(created.id).model_dump() == settled.model_dump()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_server_killed_mid_run_comes_back_with_the_response_failed(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}" if backend == "sqlite" else request.getfixturevalue("redis_url")
    with server_process(store_url) as (url, proc):
        client = sdk(url)
        created = client.responses.create(model="demo", input=LONG, background=True)
        wait_for(client, created.id, until=lambda r: r.status == "in_progress")
        time.sleep(3 * WORD_DELAY)  # some events are stored by now
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with server_process(store_url) as (url, _):
        restarted = sdk(url)
        failed = wait_for(restarted, created.id, until=lambda r: r.status not in RUNNING, timeout=10 * LEASE)
        assert failed.status == "failed"
        assert failed.error is not None and "lease" in failed.error.message
        events = events_of(restarted.responses.retrieve(created.id, stream=True))
        assert events[-2]["type"] == "error" and events[-1]["type"] == "response.failed"
        assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_server_shutting_down_fails_its_own_runs_at_once(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    with serve(CompatMiddleware(WatchedDemo(), store=store_url)) as url:
        client = sdk(url + "/v1")
        created = client.responses.create(model="demo", input=LONG, background=True)
        wait_for(client, created.id, until=lambda r: r.status == "in_progress")
    # A new server on the same store, long before any lease would have run out.
    with serve(CompatMiddleware(DemoChatApp(), store=store_url, background_lease=600)) as url:
        failed = sdk(url + "/v1").responses.retrieve(created.id)
    assert failed.status == "failed" and failed.error is not None
    assert "shut down" in failed.error.message


def test_deleting_a_running_response_stops_it_for_good(server: str, demo: WatchedDemo) -> None:
    client = sdk(server)
    created = client.responses.create(model="demo", input=LONG, background=True)
    wait_for(client, created.id, until=lambda r: r.status == "in_progress")
    client.responses.delete(created.id)
    time.sleep(3 * POLL_INTERVAL)  # a run still going would have written itself back by now
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    assert demo.ended[-1]
