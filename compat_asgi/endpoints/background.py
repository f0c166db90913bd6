"""Background responses: ``POST /responses`` with ``background: true``,
``GET /responses/{id}`` (poll, or ``?stream=true&starting_after=N`` to follow
and resume), ``POST /responses/{id}/cancel``.

A run belongs to no request: it starts at once and keeps going when the
client leaves. Its progress (the Response and the encoded events so far) is
written to the store, so any worker sharing the store can serve a poll or a
follower; followers of a run on another worker poll the store. The worker
running it holds a lease (a store flag it renews); a run whose lease ran out
(its worker died) reads as ``failed`` everywhere. A cancel is a store flag
the running worker polls, so it reaches the run from any worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

import orjson

from compat_asgi.asgi import SSE_HEADERS, Responder
from compat_asgi.core.sse import SSEDecoder, encode_events, event_offset
from compat_asgi.core.streams import Event
from compat_asgi.endpoints import Call
from compat_asgi.endpoints.responses import ResponsesOverChat, Turn
from compat_asgi.endpoints.routes import Route
from compat_asgi.endpoints.stored import StoredResponses, _bool_param, _int_param, not_recorded, query_params
from compat_asgi.errors import CompatError, InvalidRequest, ServerBusy
from compat_asgi.settings import Settings
from compat_asgi.store import Store, StoredResponse

__all__ = ["BackgroundRuns", "DEFAULT_MAX_BACKGROUND", "DEFAULT_LEASE"]

logger = logging.getLogger("compat_asgi")

DEFAULT_MAX_BACKGROUND = 64  # runs at once on one worker; then 503
DEFAULT_LEASE = 10.0  # seconds a run stays alive in the store without its worker renewing it
POLL_INTERVAL = 0.2  # cancel flags, and followers of runs on other workers, are polled this often
_CANCEL_WAIT = 5.0  # seconds a cancel waits for the run to stop before answering anyway
_CANCEL_TTL = 300.0
_RUNNING = frozenset({"queued", "in_progress"})
_ABANDONED = (
    "The server running this background response stopped before it finished "
    "(its lease expired); the response was not completed."
)
_SHUTDOWN = "The server shut down before this background response finished."
_LEASE = "lease:"
_CANCEL = "cancel:"


@dataclass(slots=True)
class _Run:
    """One run on this worker."""

    record: StoredResponse
    turn: Turn
    task: asyncio.Task[None] | None = None
    # The encoded event batches sent, newest last, as (events, bytes): at most
    # max_recorded_events bytes of them (the oldest go first), for followers.
    sent: deque[tuple[int, bytes]] = field(default_factory=deque)
    recorded: int = 0  # bytes in ``sent``
    first: int = 0  # batches that left ``sent``: past the cap, no replay from the start
    skipped: int = 0  # events in those batches
    cancelling: bool = False  # a client asked: the run ends ``cancelled``
    closing: bool = False  # this worker shuts down: the run ends ``failed``
    ended: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def cancel(self) -> None:
        if self.task is not None and not self.cancelling:
            self.cancelling = True
            self.task.cancel()

    def events(self) -> bytes | None:
        """What to store as the events: all of them, or ``b""`` once some were let go."""
        if self.first:
            return b""
        return b"".join(data for _, data in self.sent) if self.sent else None

    def checkpoint(self) -> None:
        """Raise the cancellation that was asked for, should it have been lost:
        on Python 3.11, ``asyncio.wait_for`` (which redis-py awaits every
        command through) drops a cancel that arrives as its inner await
        completes, and the run would go on to the end."""
        if self.cancelling or self.closing:
            raise asyncio.CancelledError


class BackgroundRuns:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        responses: ResponsesOverChat,
        stored: StoredResponses,
        *,
        max_running: int = DEFAULT_MAX_BACKGROUND,
        lease: float = DEFAULT_LEASE,
    ) -> None:
        if max_running <= 0 or lease <= 0:
            raise ValueError("max_background_runs and background_lease must be positive")
        self.settings = settings
        self.store = store
        self._responses = responses
        self._stored = stored
        self._max_running = max_running
        self._lease = lease
        self._worker = os.urandom(8).hex().encode()
        self._runs: dict[str, _Run] = {}

    def routes(self) -> list[Route]:
        """Retrieve and cancel; the store's other response routes as they are."""
        own = [
            Route("GET", "/responses/{response_id}", self.retrieve),
            Route("DELETE", "/responses/{response_id}", self.delete),
            Route("POST", "/responses/{response_id}/cancel", self.cancel),
        ]
        taken = {(route.method, route.path) for route in own}
        return own + [route for route in self._stored.routes() if (route.method, route.path) not in taken]

    # -- create ----------------------------------------------------------------

    async def create(self, call: Call, responder: Responder) -> None:
        body = call.json()
        if not isinstance(body, dict):
            raise InvalidRequest("The request body must be a JSON object.")
        if body.get("store") is False:
            raise InvalidRequest("Background responses need store=true.", param="store", code="invalid_value")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InvalidRequest("'stream' must be a boolean.", param="stream", code="invalid_type")
        if len(self._runs) >= self._max_running:
            raise ServerBusy(
                f"This server is running {self._max_running} background responses; retry shortly.",
                headers=[(b"retry-after", b"1")],
            )
        request = {key: value for key, value in body.items() if key not in ("background", "stream")}
        turn = Turn()
        events = self._responses.events(
            call, request, turn, response_id=self.settings.ids("resp"), background=True
        )
        await anext(events)  # the request is valid (a 400 goes to the client), the run starts
        assert turn.response is not None
        response_id = turn.response["id"]
        queued = {**turn.response, "status": "queued"}
        record = StoredResponse(
            id=response_id,
            owner=call.owner,
            response=queued,
            input_items=turn.items,
            events=None,  # none yet (b"" would say: more than are recorded)
            created_at=turn.response["created_at"],
        )
        try:
            # Lease first: a reader never sees the run without one.
            await self.store.put_flag(_LEASE + response_id, self._worker, ttl=self._lease)
            await self.store.save(record)
        except BaseException:
            await events.aclose()
            raise
        run = _Run(record, turn)
        self._runs[response_id] = run
        run.task = asyncio.create_task(self._drive(run, events, call), name=f"background {response_id}")
        if stream:
            await self._follow(call, responder, response_id, -1)
        else:
            await responder.send_json(200, queued)

    async def _drive(self, run: _Run, events: AsyncGenerator[list[Event], None], call: Call) -> None:
        loop = asyncio.get_running_loop()
        watcher = asyncio.create_task(self._watch(run))
        core = run.turn.core
        assert core is not None
        saved = float("-inf")  # the first batch (the run is in progress) is stored at once
        try:
            try:
                async with contextlib.aclosing(events):
                    async for batch in events:
                        run.checkpoint()
                        if not batch:
                            continue
                        self._sent(run, batch, run.turn.encoded)
                        # The translator stores the final response itself, before its last batch.
                        if not core.done and loop.time() - saved >= POLL_INTERVAL:
                            await self._save_progress(run)
                            run.checkpoint()
                            saved = loop.time()
            except CompatError as exc:  # refused upstream before streaming: the response exists, so it failed
                self._sent(run, core.start() + core.fail(exc))
                await self._save_final(run)
        except asyncio.CancelledError:
            if not run.cancelling:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            if not core.done:
                self._sent(run, core.cancel())
                await self._save_final(run)
        except Exception:
            logger.exception("background response %s failed", run.record.id)
        finally:
            run.ended = True
            watcher.cancel()
            self._runs.pop(run.record.id, None)
            run.changed.set()

    def _sent(self, run: _Run, batch: list[Event], data: bytes | None = None) -> None:
        """Keep ``batch`` (already encoded: ``data``) for followers, and tell them."""
        if data is None:
            data = encode_events(batch)
        run.sent.append((len(batch), data))
        run.recorded += len(data)
        while run.recorded > self.settings.max_recorded_events and len(run.sent) > 1:
            count, old = run.sent.popleft()
            run.recorded -= len(old)
            run.first += 1
            run.skipped += count
        run.changed.set()
        run.changed = asyncio.Event()

    def _snapshot(self, run: _Run, response: dict[str, Any]) -> StoredResponse:
        return StoredResponse(
            id=run.record.id,
            owner=run.record.owner,
            response=response,
            input_items=run.record.input_items,
            events=run.events(),
            created_at=run.record.created_at,
        )

    def _progress(self, run: _Run) -> dict[str, Any]:
        core = run.turn.core
        assert run.turn.response is not None and core is not None
        if core.done:
            return run.turn.response
        return {**run.turn.response, "output": core.done_items()}

    async def _save_progress(self, run: _Run) -> None:
        try:
            await self.store.save(self._snapshot(run, self._progress(run)))
        except CompatError as exc:
            logger.warning("could not store progress of %s: %s", run.record.id, exc.message)

    async def _save_final(self, run: _Run) -> None:
        assert run.turn.response is not None
        try:
            await self.store.save(self._snapshot(run, run.turn.response))
        except CompatError as exc:
            logger.warning("could not store the end of %s: %s", run.record.id, exc.message)

    async def _watch(self, run: _Run) -> None:
        """Renew the run's lease, and stop it when a cancel was asked for on any worker."""
        loop = asyncio.get_running_loop()
        renewed = loop.time()
        key = run.record.id
        while not run.ended:  # not only a cancel: one that reaches us inside redis-py may be lost
            await asyncio.sleep(POLL_INTERVAL)
            try:
                if loop.time() - renewed >= self._lease / 3:
                    await self.store.put_flag(_LEASE + key, self._worker, ttl=self._lease)
                    renewed = loop.time()
                if await self.store.get_flag(_CANCEL + key) is not None:
                    run.cancel()
                    return
            except CompatError as exc:
                logger.warning("background response %s: store unreachable: %s", key, exc.message)

    # -- retrieve, follow, cancel --------------------------------------------------

    async def _current(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The stored record, failed if its run lost its worker."""
        record = await self.store.get(response_id, owner=owner)
        run = self._runs.get(response_id)
        if run is not None and record is not None and run.turn.response is not None:
            return self._snapshot(run, self._progress(run))  # running here: as it is now
        if record is None or record.response.get("status") not in _RUNNING:
            return record
        if await self.store.get_flag(_LEASE + response_id) is not None:
            return record
        # Read again: the run may have ended between the two reads.
        record = await self.store.get(response_id, owner=owner)
        if record is None or record.response.get("status") not in _RUNNING:
            return record
        return await self._fail_abandoned(record)

    async def _fail_abandoned(self, record: StoredResponse, message: str = _ABANDONED) -> StoredResponse:
        events = record.events
        response = {**record.response, "status": "failed", "error": {"code": "server_error", "message": message}}
        if events != b"":  # not past the recording cap: the events end as the response does
            events = events or b""
            count = len(SSEDecoder().feed(events + b"\n\n"))
            response["output"] = _done_items(events)
            tail: list[Event] = [
                {"type": "error", "code": "server_error", "message": message, "param": None, "sequence_number": count},
                {"type": "response.failed", "response": response, "sequence_number": count + 1},
            ]
            events += encode_events(tail)
        failed = StoredResponse(
            id=record.id,
            owner=record.owner,
            response=response,
            input_items=record.input_items,
            events=events,
            created_at=record.created_at,
        )
        await self.store.save(failed)
        return failed

    async def retrieve(self, call: Call, responder: Responder) -> None:
        response_id = call.params["response_id"]
        query = query_params(call)
        stream = _bool_param(query, "stream")
        starting_after = _int_param(query, "starting_after", -1, -1, 1 << 31)
        record = await self._current(response_id, call.owner)
        if record is None or not record.response.get("background"):
            await self._stored.retrieve(call, responder)  # not a background run: served as stored
            return
        if stream:
            await self._follow(call, responder, response_id, starting_after)
        else:
            await responder.send_json(200, record.response)

    async def _follow(self, call: Call, responder: Responder, response_id: str, starting_after: int) -> None:
        """Stream the run's events after ``starting_after`` as they come, from
        this worker's memory when it runs here, else by polling the store.

        Past ``max_recorded_events`` bytes of events a run keeps only the
        latest for its followers and stores none: following it from before
        those is refused (400) like replaying it; a follower that falls that
        far behind has its stream ended, and resuming it gets the 400."""
        skip = starting_after + 1
        run = self._runs.get(response_id)
        if run is not None:
            if skip < run.skipped:
                raise not_recorded(response_id)
            await self._stream(responder, self._from_run(run, skip - run.skipped))
            return
        record = await self._current(response_id, call.owner)
        if record is not None and record.events == b"":
            raise not_recorded(response_id)
        await self._stream(responder, self._from_store(call, response_id, skip))

    async def _stream(self, responder: Responder, pieces: AsyncGenerator[bytes, None]) -> None:
        await responder.start(200, SSE_HEADERS)
        ticker = asyncio.create_task(responder.keepalive(self.settings.keepalive_interval))
        try:
            async with contextlib.aclosing(pieces):
                async for piece in pieces:
                    await responder.body(piece)
        finally:
            ticker.cancel()
        await responder.body(b"", more_body=False)

    async def _from_run(self, run: _Run, skip: int) -> AsyncGenerator[bytes, None]:
        """A run of this worker, from its memory, to its end: ``skip`` events of
        its batches in memory first left out."""
        batch = run.first  # the next batch to send, counted from the run's start
        while batch >= run.first:  # else this follower fell behind what is kept
            ended, waiter = run.ended, run.changed
            fresh = list(itertools.islice(run.sent, batch - run.first, None))
            batch += len(fresh)
            for count, data in fresh:
                if skip >= count:
                    skip -= count
                    continue
                yield data[event_offset(data, skip) :]
                skip = 0
            if ended:
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL):
                    await waiter.wait()

    async def _from_store(self, call: Call, response_id: str, skip: int) -> AsyncGenerator[bytes, None]:
        """A run of another worker (or one that ended), by polling the store."""
        offset = 0  # bytes of the stored stream already read
        while True:
            record = await self._current(response_id, call.owner)
            if record is None:
                return
            done = record.response.get("status") not in _RUNNING
            fresh = (record.events or b"")[offset:]
            if fresh:
                offset += len(fresh)
                count = fresh.count(b"\n\n")  # each event ends with the one blank line
                if skip < count:
                    yield fresh[event_offset(fresh, skip) :]
                skip = max(0, skip - count)
            if done:
                return
            await asyncio.sleep(POLL_INTERVAL)

    async def cancel(self, call: Call, responder: Responder) -> None:
        response_id = call.params["response_id"]
        record = await self._current(response_id, call.owner)
        if record is None:
            await self._stored.retrieve(call, responder)  # the store's 404
            return
        if not record.response.get("background"):
            raise InvalidRequest(
                "Only responses created with background=true can be cancelled.",
                param="response_id",
                code="invalid_value",
            )
        record = await self._stop(record, call.owner)
        await responder.send_json(200, record.response)

    async def delete(self, call: Call, responder: Responder) -> None:
        """Deleting a running response stops it first, so it cannot write itself back."""
        record = await self._current(call.params["response_id"], call.owner)
        if record is not None and record.response.get("background"):
            await self._stop(record, call.owner)
        await self._stored.delete(call, responder)

    async def _stop(self, record: StoredResponse, owner: str | None) -> StoredResponse:
        if record.response.get("status") not in _RUNNING:
            return record
        run = self._runs.get(record.id)
        if run is not None:
            run.cancel()
        else:
            await self.store.put_flag(_CANCEL + record.id, b"1", ttl=_CANCEL_TTL)
        return await self._stopped(record.id, owner) or record

    async def _stopped(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The record once its run stopped (here or on another worker), or as it
        is after a few seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _CANCEL_WAIT
        while True:
            run = self._runs.get(response_id)
            if run is not None and run.task is not None:
                # asyncio.wait neither cancels the run nor swallows our own cancellation.
                await asyncio.wait([run.task], timeout=max(0.0, deadline - loop.time()))
            record = await self._current(response_id, owner)
            if record is None or record.response.get("status") not in _RUNNING or loop.time() >= deadline:
                return record
            await asyncio.sleep(POLL_INTERVAL / 2)

    async def aclose(self) -> None:
        """Shutting down: this worker's runs end ``failed`` now rather than when their leases run out."""
        for run in list(self._runs.values()):
            if run.task is not None:
                run.closing = True
                run.task.cancel()
            with contextlib.suppress(BaseException):
                if run.task is not None:
                    await run.task
            with contextlib.suppress(CompatError):
                snapshot = self._snapshot(run, {**self._progress(run), "status": "in_progress"})
                await self._fail_abandoned(snapshot, _SHUTDOWN)
        self._runs.clear()


def _done_items(events: bytes) -> list[dict[str, Any]]:
    """The output items whose ``output_item.done`` event is in ``events``, in order."""
    items = []
    for event in SSEDecoder().feed(events + b"\n\n"):
        if event.event == b"response.output_item.done":
            items.append(orjson.loads(event.data)["item"])
    return items
