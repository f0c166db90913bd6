"""Protocol validator: checks captured streams against the protocol rules
listed in the README ("What is translated" and "Errors, faults and limits").

Used by the streaming tests and by ``compat-asgi conformance``. Every check
returns a list of :class:`Violation`; nothing here raises on bad input, since
a conformance run must score garbage, not crash on it. A bug in the validator
itself surfaces as a violation with rule ``"internal"`` (tests assert none).

Pure: stdlib and orjson only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "Violation",
    "parse_sse",
    "validate_responses_sse",
    "validate_responses_events",
    "validate_response_object",
    "validate_chat_sse",
    "validate_chat_completion",
    "assert_valid",
]


@dataclass(frozen=True, slots=True)
class Violation:
    rule: str
    message: str
    index: int | None = None

    def __str__(self) -> str:
        where = "" if self.index is None else f" at event {self.index}"
        return f"[{self.rule}]{where}: {self.message}"


def assert_valid(violations: list[Violation]) -> None:
    """Raise ``AssertionError`` listing every violation (for tests)."""
    if violations:
        lines = "\n".join(f"  {v}" for v in violations)
        raise AssertionError(f"{len(violations)} protocol violation(s):\n{lines}")


# --- helpers ----------------------------------------------------------------

_ITEM_PREFIX = {"message": "msg_", "function_call": "fc_", "reasoning": "rs_", "custom_tool_call": "ctc_"}
# Tool-call items whose one text field streams as delta events, then a done event.
_CALL_FIELDS = {"function_call": "arguments", "custom_tool_call": "input"}
_CALL_EVENTS = {
    "response.function_call_arguments.delta": "function_call",
    "response.function_call_arguments.done": "function_call",
    "response.custom_tool_call_input.delta": "custom_tool_call",
    "response.custom_tool_call_input.done": "custom_tool_call",
}
_ITEM_STATUSES = frozenset({"in_progress", "completed", "incomplete"})
_RESPONSE_STATUSES = frozenset({"queued", "in_progress", "completed", "incomplete", "failed", "cancelled"})
_CHAT_FINISH = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})


def _int(x: Any) -> int | None:
    """``x`` if it is a JSON integer (bool is not), else None."""
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _is_int(x: Any) -> bool:
    return _int(x) is not None


def _is_count(x: Any) -> bool:
    n = _int(x)
    return n is not None and n >= 0


def _nonempty_str(x: Any) -> bool:
    return isinstance(x, str) and x != ""


def _q(value: Any, limit: int = 240) -> str:
    """Quote a JSON value for a message; never fails, never huge."""
    try:
        text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except Exception:  # un-serialisable or too deep: the type is enough
        text = f"<{type(value).__name__}>"
    return _clip(text, limit)


def _clip(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _scalar(x: Any) -> str:
    """Exact, hashable stand-in for a JSON scalar, for comparing items."""
    if isinstance(x, str):
        return x
    if x is None or isinstance(x, (bool, int, float)):
        return f"\0{x!r}"
    return f"\0<{type(x).__name__}>"


def _loads(data: str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _guarded(run: Callable[[list[Violation]], None]) -> list[Violation]:
    out: list[Violation] = []
    try:
        run(out)
    except Exception as exc:  # the validator reports, it never raises
        out.append(Violation("internal", f"validator error: {type(exc).__name__}: {exc}", None))
    return out


def _token_problems(usage: Any, inp: str, outp: str, details: tuple[tuple[str, str], ...], required: bool) -> list[str]:
    if not isinstance(usage, Mapping):
        return [f"usage is missing or not an object: {_q(usage)}"]
    problems = [f"usage.{k} is not a non-negative int: {_q(usage.get(k))}" for k in (inp, outp, "total_tokens") if not _is_count(usage.get(k))]
    for obj_key, key in details:
        obj = usage.get(obj_key)
        if obj is None and not required:
            continue
        if not isinstance(obj, Mapping) or not _is_count(obj.get(key)):
            problems.append(f"usage.{obj_key}.{key} is not a non-negative int: {_q(obj)}")
    if not problems and usage[inp] + usage[outp] != usage["total_tokens"]:
        problems.append(f"usage.total_tokens {usage['total_tokens']} != {inp} + {outp} ({usage[inp] + usage[outp]})")
    return problems


# --- SSE framing ------------------------------------------------------------

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(slots=True)
class _Frame:
    event: str | None
    data: list[str]


def _frames(raw: bytes) -> tuple[list[_Frame], list[str]]:
    """SSE frames that carry an ``event`` or ``data`` field, plus byte-level problems."""
    problems: list[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})")
        text = raw.decode("utf-8", "replace")
    lines = _LINE_END.split(text.removeprefix("\ufeff"))
    frames: list[_Frame] = []
    event: str | None = None
    data: list[str] = []
    for line in lines[:-1]:  # the last piece has no line end yet
        if not line:
            if event is not None or data:
                frames.append(_Frame(event, data))
            event, data = None, []
        elif not line.startswith(":"):  # ':' lines are comments / keepalives
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if lines[-1] or event is not None or data:
        problems.append(f"stream ends inside an event (no blank line after it): {_q(lines[-1] or data)}")
    return frames, problems


def parse_sse(raw: bytes) -> list[tuple[str | None, str]]:
    """``(event name or None, data)`` per dispatched event, as an SSE client sees them."""
    frames, _ = _frames(raw)
    return [(f.event, "\n".join(f.data)) for f in frames if f.data]


# --- Responses objects ------------------------------------------------------


def _item_problems(item: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(item, Mapping):
        return [("object", f"{where} is not an object: {_q(item)}")]
    out: list[tuple[str, str]] = []
    itype, iid = item.get("type"), item.get("id")
    if not isinstance(itype, str):
        out.append(("object", f"{where} has no string type: {_q(item)}"))
        itype = ""
    prefix = _ITEM_PREFIX.get(itype)
    if not isinstance(iid, str):
        out.append(("object", f"{where} has no string id: {_q(item)}"))
    elif prefix is not None and not iid.startswith(prefix):
        out.append(("ids", f"{where} {itype} id {iid!r} does not start with {prefix!r}"))
    status = item.get("status")
    if (status is not None or itype == "message") and not (isinstance(status, str) and status in _ITEM_STATUSES):
        out.append(("object", f"{where} has bad status {_q(status)}"))
    if itype == "message":
        if item.get("role") != "assistant":
            out.append(("object", f"{where} message role is {_q(item.get('role'))}, not 'assistant'"))
        out += _parts_problems(item.get("content"), f"{where}.content", {"output_text": "text", "refusal": "refusal"})
    elif itype in _CALL_FIELDS:
        for key in ("call_id", "name"):
            if not _nonempty_str(item.get(key)):
                out.append(("function-call", f"{where} {itype} {key} is not a non-empty string: {_q(item.get(key))}"))
        field = _CALL_FIELDS[itype]
        if not isinstance(item.get(field), str):
            out.append(("function-call", f"{where} {itype} {field} is not a string: {_q(item.get(field))}"))
    elif itype == "reasoning":
        out += _parts_problems(item.get("summary"), f"{where}.summary", {"summary_text": "text"})
        if item.get("content") is not None:
            out += _parts_problems(item.get("content"), f"{where}.content", {"reasoning_text": "text"})
    return out


def _parts_problems(parts: Any, where: str, kinds: Mapping[str, str]) -> list[tuple[str, str]]:
    if not isinstance(parts, list):
        return [("object", f"{where} is not a list: {_q(parts)}")]
    out: list[tuple[str, str]] = []
    for k, part in enumerate(parts):
        ptype = part.get("type") if isinstance(part, Mapping) else None
        text_key = kinds.get(ptype) if isinstance(ptype, str) else None
        if text_key is None or not isinstance(part.get(text_key), str):
            out.append(("object", f"{where}[{k}] is not one of {sorted(kinds)} with a string text: {_q(part)}"))
    return out


def _response_problems(obj: Any, expect_status: str | None, status_rule: str, items: bool) -> list[tuple[str, str]]:
    if not isinstance(obj, Mapping):
        return [("object", f"response is not an object: {_q(obj)}")]
    out: list[tuple[str, str]] = []
    rid = obj.get("id")
    if not isinstance(rid, str):
        out.append(("object", f"response id is not a string: {_q(rid)}"))
    elif not rid.startswith("resp_"):
        out.append(("ids", f"response id {rid!r} does not start with 'resp_'"))
    if obj.get("object") != "response":
        out.append(("object", f"response object field is {_q(obj.get('object'))}, not 'response'"))
    if not _is_int(obj.get("created_at")):
        out.append(("object", f"response created_at is not an int: {_q(obj.get('created_at'))}"))
    if not isinstance(obj.get("model"), str):
        out.append(("object", f"response model is not a string: {_q(obj.get('model'))}"))
    status = obj.get("status")
    if not isinstance(status, str) or status not in _RESPONSE_STATUSES:
        out.append(("object", f"response status is {_q(status)}"))
    if expect_status is not None and status != expect_status:
        out.append((status_rule, f"response status is {_q(status)}, expected {expect_status!r}"))
    output = obj.get("output")
    if not isinstance(output, list):
        out.append(("object", f"response output is not a list: {_q(output)}"))
    elif items:
        call_ids: set[str] = set()
        for k, item in enumerate(output):
            out += _item_problems(item, f"output[{k}]")
            call_id = item.get("call_id") if isinstance(item, Mapping) and item.get("type") in _CALL_FIELDS else None
            if isinstance(call_id, str):
                if call_id in call_ids:
                    out.append(("function-call", f"output[{k}] repeats call_id {call_id!r}"))
                call_ids.add(call_id)
    if not isinstance(obj.get("parallel_tool_calls"), bool):
        out.append(("object", f"response parallel_tool_calls is not a bool: {_q(obj.get('parallel_tool_calls'))}"))
    if not isinstance(obj.get("tools"), list):
        out.append(("object", f"response tools is not a list: {_q(obj.get('tools'))}"))
    if "tool_choice" not in obj:
        out.append(("object", "response has no tool_choice"))
    if status in ("completed", "incomplete"):
        details = (("input_tokens_details", "cached_tokens"), ("output_tokens_details", "reasoning_tokens"))
        out += [("usage", p) for p in _token_problems(obj.get("usage"), "input_tokens", "output_tokens", details, True)]
    if status == "incomplete":
        inc = obj.get("incomplete_details")
        if not isinstance(inc, Mapping) or not _nonempty_str(inc.get("reason")):
            out.append((status_rule, f"incomplete response without incomplete_details.reason: {_q(inc)}"))
    if status == "failed":
        err = obj.get("error")
        if not isinstance(err, Mapping) or not isinstance(err.get("code"), str) or not isinstance(err.get("message"), str):
            out.append((status_rule, f"failed response without error {{code, message}}: {_q(err)}"))
    return out


def validate_response_object(obj: Any, *, expect_status: str | None = None) -> list[Violation]:
    """Check a final Response object (non-streamed, or from a terminal event)."""

    def run(out: list[Violation]) -> None:
        out += [Violation(r, m, None) for r, m in _response_problems(obj, expect_status, "object", True)]

    return _guarded(run)


# --- Responses streams ------------------------------------------------------

# event type -> (part list, part kind, field carrying the full text on .done; None for deltas)
_TEXT_EVENTS: dict[str, tuple[str, str, str | None]] = {
    "response.output_text.delta": ("content", "output_text", None),
    "response.output_text.done": ("content", "output_text", "text"),
    "response.refusal.delta": ("content", "refusal", None),
    "response.refusal.done": ("content", "refusal", "refusal"),
    "response.reasoning_text.delta": ("content", "reasoning_text", None),
    "response.reasoning_text.done": ("content", "reasoning_text", "text"),
    "response.reasoning_summary_text.delta": ("summary", "summary_text", None),
    "response.reasoning_summary_text.done": ("summary", "summary_text", "text"),
}
_PART_EVENTS = {  # event type -> (part list, is_done)
    "response.content_part.added": ("content", False),
    "response.content_part.done": ("content", True),
    "response.reasoning_summary_part.added": ("summary", False),
    "response.reasoning_summary_part.done": ("summary", True),
}
_PART_KINDS = {
    ("message", "content"): ("output_text", "refusal"),
    ("reasoning", "content"): ("reasoning_text",),
    ("reasoning", "summary"): ("summary_text",),
}
_PART_TEXT_KEY = {"output_text": "text", "refusal": "refusal", "reasoning_text": "text", "summary_text": "text"}
_INDEX_KEY = {"content": "content_index", "summary": "summary_index"}
_TERMINALS = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}


@dataclass(slots=True)
class _Part:
    kind: str
    text: str = ""
    text_done: bool = False
    done: bool = False


@dataclass(slots=True)
class _Item:
    id: str | None
    type: str | None
    call_id: Any = None
    name: Any = None
    parts: dict[str, list[_Part]] = field(default_factory=lambda: {"content": [], "summary": []})
    args: str = ""
    args_done: bool = False
    done: bool = False


class _ResponsesChecker:
    """Walks decoded events in order, keeping per-item state."""

    def __init__(self, out: list[Violation]) -> None:
        self.out = out
        self.at: int | None = None
        self.event: Any = None
        self.position = 0  # events seen, decodable or not
        self.next_seq: int | None = 0
        self.response_id: str | None = None
        self.saw_start = {"response.created": False, "response.in_progress": False}
        self.items: dict[int, _Item] = {}
        self.done_items: dict[int, Mapping[str, Any]] = {}
        self.item_ids: set[str] = set()
        self.call_ids: set[str] = set()
        self.error_at: int | None = None
        self.terminal_at: int | None = None

    def add(self, rule: str, message: str) -> None:
        if self.at is not None:
            message = f"{message} -- event: {_q(self.event)}"
        self.out.append(Violation(rule, message, self.at))

    def lost(self) -> None:
        """An event that could not be decoded: keep positions, resync sequence numbers."""
        self.position += 1
        self.next_seq = None

    def feed(self, index: int, ev: Any) -> None:
        self.at, self.event = index, ev
        position, self.position = self.position, self.position + 1
        if not isinstance(ev, Mapping):
            self.add("object", "event is not a JSON object")
            self.next_seq = None
            return
        self._sequence(ev.get("sequence_number"))
        etype = ev.get("type")
        if not isinstance(etype, str):
            self.add("framing", "event has no string type")
            return
        if self.terminal_at is not None:
            self.add("terminal", f"{etype} after the terminal event at {self.terminal_at}")
            return
        if self.error_at is not None and etype != "response.failed":
            self.add("terminal", f"{etype} after the error event at {self.error_at}; only response.failed may follow")
        if etype in self.saw_start:
            self._start(etype, ev, position)
        elif etype in _TERMINALS:
            self._terminal(etype, ev)
        elif etype == "error":
            self.error_at = index
            if not isinstance(ev.get("message"), str):
                self.add("terminal", "error event without a string message")
            self._all_closed("error")
        elif etype == "response.output_item.added":
            self._item_added(ev)
        elif etype == "response.output_item.done":
            self._item_done(ev)
        elif etype in _PART_EVENTS:
            self._part_event(etype, ev)
        elif etype in _TEXT_EVENTS:
            self._text_event(etype, ev)
        elif etype in _CALL_EVENTS:
            self._arguments(etype, ev)
        elif "output_index" in ev:  # an item event we do not model: still check lifecycle and item_id
            self._lookup(etype, ev)

    def finish(self) -> None:
        self.at, self.event = None, None
        for etype, seen in self.saw_start.items():
            if not seen:
                self.add("start", f"no {etype} event")
        if self.terminal_at is None:
            self.add("terminal", "stream has no terminal event (response.completed / incomplete / failed)")

    # rule 2
    def _sequence(self, n: Any) -> None:
        if not _is_int(n):
            self.add("sequence", f"sequence_number missing or not an int: {_q(n)}")
            self.next_seq = None if self.next_seq is None else self.next_seq + 1
            return
        if self.next_seq is not None and n != self.next_seq:
            self.add("sequence", f"sequence_number {n}, expected {self.next_seq}")
        self.next_seq = n + 1

    # rules 3 and 10
    def _start(self, etype: str, ev: Mapping[str, Any], position: int) -> None:
        want = 0 if etype == "response.created" else 1
        if position != want or self.saw_start[etype]:
            self.add("start", f"{etype} must come once, as event {want}")
        self.saw_start[etype] = True
        resp = ev.get("response")
        if not isinstance(resp, Mapping):
            self.add("start", f"{etype} carries no response object")
            return
        rid = resp.get("id")
        if not isinstance(rid, str) or not rid.startswith("resp_"):
            self.add("ids", f"response id {_q(rid)} does not start with 'resp_'")
        self._same_response(rid)
        if resp.get("object") != "response":
            self.add("start", f"response.object is {_q(resp.get('object'))}, not 'response'")
        if resp.get("status") != "in_progress":
            self.add("start", f"response.status is {_q(resp.get('status'))}, not 'in_progress'")
        output = resp.get("output")
        if not isinstance(output, list) or output:
            self.add("start", f"response.output is {_q(output)}, not []")
        if not _is_int(resp.get("created_at")):
            self.add("start", f"response.created_at is not an int: {_q(resp.get('created_at'))}")
        if not isinstance(resp.get("model"), str):
            self.add("start", f"response.model is not a string: {_q(resp.get('model'))}")

    def _same_response(self, rid: Any) -> None:
        if not isinstance(rid, str):
            return
        if self.response_id is None:
            self.response_id = rid
        elif rid != self.response_id:
            self.add("ids", f"response id {rid!r} differs from {self.response_id!r} on an earlier lifecycle event")

    # rule 4: item lifecycle, output_index and item_id
    def _lookup(self, etype: str, ev: Mapping[str, Any], check_item_id: bool = True) -> _Item | None:
        oi = _int(ev.get("output_index"))
        if oi is None:
            self.add("output-index", f"{etype} without an integer output_index")
            return None
        item = self.items.get(oi)
        if item is None:
            self.add("item-lifecycle", f"{etype} references output_index {oi} before its response.output_item.added")
            return None
        if item.done:
            self.add("item-lifecycle", f"{etype} references output_index {oi} after its response.output_item.done")
            return None
        if check_item_id and item.id is not None and ev.get("item_id") != item.id:
            self.add("item-id", f"item_id {_q(ev.get('item_id'))} is not {item.id!r}, the item at output_index {oi}")
        return item

    def _item_added(self, ev: Mapping[str, Any]) -> None:
        oi, raw = _int(ev.get("output_index")), ev.get("item")
        if oi is None:
            self.add("output-index", "response.output_item.added without an integer output_index")
            return
        expected = len(self.items) and max(self.items) + 1
        if oi in self.items or oi < expected:
            self.add("output-index", f"output_index {oi} reused; expected {expected}")
            return
        if oi != expected:
            self.add("output-index", f"output_index {oi} leaves a gap; expected {expected}")
        if not isinstance(raw, Mapping):
            self.add("item-lifecycle", "response.output_item.added without an item object")
            raw = {}
        for rule, message in _item_problems(raw, "added item"):
            self.add(rule, message)
        iid, itype = raw.get("id"), raw.get("type")
        item = _Item(iid if isinstance(iid, str) else None, itype if isinstance(itype, str) else None)
        self.items[oi] = item
        if raw.get("status") != "in_progress":
            self.add("item-lifecycle", f"added item status is {_q(raw.get('status'))}, not 'in_progress'")
        if item.id is not None:
            if item.id in self.item_ids:
                self.add("ids", f"item id {item.id!r} used by two items")
            self.item_ids.add(item.id)
        if item.type == "message" and raw.get("content") not in (None, []):
            self.add("item-lifecycle", "added message item must start with empty content")
        if item.type in _CALL_FIELDS:
            item.call_id, item.name = raw.get("call_id"), raw.get("name")
            if isinstance(item.call_id, str):
                if item.call_id in self.call_ids:
                    self.add("function-call", f"call_id {item.call_id!r} used by two function calls")
                self.call_ids.add(item.call_id)

    def _item_done(self, ev: Mapping[str, Any]) -> None:
        item = self._lookup("response.output_item.done", ev, check_item_id=False)
        if item is None:
            return
        item.done = True
        raw = ev.get("item")
        if not isinstance(raw, Mapping):
            self.add("item-lifecycle", "response.output_item.done without an item object")
            return
        self.done_items[ev["output_index"]] = raw
        if raw.get("id") != item.id or raw.get("type") != item.type:
            self.add("item-id", f"done item is {_q(raw.get('type'))} {_q(raw.get('id'))}, added was {item.type!r} {item.id!r}")
        if raw.get("status") not in ("completed", "incomplete"):
            self.add("item-lifecycle", f"done item status is {_q(raw.get('status'))}, not 'completed' or 'incomplete'")
        for key, parts in item.parts.items():
            kinds = _PART_KINDS.get((item.type or "", key))
            if kinds is None or (key == "content" and item.type == "reasoning" and not parts and raw.get("content") is None):
                continue
            for k, part in enumerate(parts):
                if not part.done:
                    self.add("text-parts", f"{_INDEX_KEY[key]} {k} still open at response.output_item.done")
            self._same_parts(key, parts, raw.get(key))
        field = _CALL_FIELDS.get(item.type or "")
        if field is not None:
            if not item.args_done:
                self.add("function-call", f"{item.type} item done without its {field} done event")
            if raw.get(field) != item.args:
                self.add("function-call", f"done item {field} {_q(raw.get(field))} != streamed {field} {_q(item.args)}")
            if raw.get("call_id") != item.call_id or raw.get("name") != item.name:
                self.add("function-call", "done item call_id/name differ from the added item")

    # failure closes what is open: a fault reports only after every part and item is closed
    def _all_closed(self, etype: str) -> None:
        for oi, item in sorted(self.items.items()):
            if item.done:
                continue
            open_parts = [
                f"{_INDEX_KEY[key]} {k}" for key, parts in item.parts.items() for k, part in enumerate(parts) if not part.done
            ]
            what = f" (open parts: {', '.join(open_parts)})" if open_parts else ""
            self.add(
                "failure-close",
                f"item {item.id!r} at output_index {oi} still open at {etype}{what}; "
                "a fault must first close every open part and item (status 'incomplete')",
            )

    def _same_parts(self, key: str, parts: list[_Part], raw: Any) -> None:
        want = [(p.kind, p.text) for p in parts]
        if not isinstance(raw, list) or [_part_digest(p) for p in raw] != want:
            self.add("text-parts", f"done item {key} {_q(raw)} does not match the streamed parts {_q(want)}")

    # rule 5: content / summary parts and their text
    def _part(self, etype: str, ev: Mapping[str, Any], key: str) -> tuple[_Item, _Part] | None:
        item = self._lookup(etype, ev)
        if item is None:
            return None
        if (item.type or "", key) not in _PART_KINDS:
            self.add("text-parts", f"{etype} on a {item.type!r} item")
            return None
        k, parts = _int(ev.get(_INDEX_KEY[key])), item.parts[key]
        if k is None or not 0 <= k < len(parts):
            self.add("text-parts", f"{etype} for {_INDEX_KEY[key]} {_q(ev.get(_INDEX_KEY[key]))}, which was never added")
            return None
        return item, parts[k]

    def _part_event(self, etype: str, ev: Mapping[str, Any]) -> None:
        key, is_done = _PART_EVENTS[etype]
        raw = ev.get("part")
        ptype = raw.get("type") if isinstance(raw, Mapping) else None
        text = raw.get(_PART_TEXT_KEY.get(ptype, "text")) if isinstance(raw, Mapping) and isinstance(ptype, str) else None
        if not is_done:
            item = self._lookup(etype, ev)
            if item is None:
                return
            kinds = _PART_KINDS.get((item.type or "", key))
            parts = item.parts.get(key, [])
            k = _int(ev.get(_INDEX_KEY[key]))
            if kinds is None:
                self.add("text-parts", f"{etype} on a {item.type!r} item")
            elif k != len(parts):
                self.add("text-parts", f"{_INDEX_KEY[key]} {_q(ev.get(_INDEX_KEY[key]))}, expected {len(parts)}")
            elif ptype not in kinds:
                self.add("text-parts", f"part type {_q(ptype)} is not one of {list(kinds)}")
            else:
                if text != "":
                    self.add("text-parts", "an added part must start with empty text")
                parts.append(_Part(str(ptype)))
            return
        found = self._part(etype, ev, key)
        if found is None:
            return
        _, part = found
        if not part.text_done:
            self.add("text-parts", f"{etype} before the {part.kind} text was done")
        if part.done:
            self.add("text-parts", f"second {etype} for this part")
        part.done = True
        if ptype != part.kind or text != part.text:
            self.add("text-parts", f"done part {_q(raw)} != streamed {part.kind} {_q(part.text)}")

    def _text_event(self, etype: str, ev: Mapping[str, Any]) -> None:
        key, kind, full_key = _TEXT_EVENTS[etype]
        found = self._part(etype, ev, key)
        if found is None:
            return
        _, part = found
        if part.kind != kind:
            self.add("text-parts", f"{etype} on a {part.kind} part")
        if part.text_done:
            self.add("text-parts", f"{etype} after the part's text was done")
        if full_key is None:
            delta = ev.get("delta")
            if isinstance(delta, str):
                part.text += delta
            else:
                self.add("text-parts", f"delta is not a string: {_q(delta)}")
            return
        part.text_done = True
        if ev.get(full_key) != part.text:
            self.add("text-parts", f"{full_key} {_q(ev.get(full_key))} != concatenated deltas {_q(part.text)}")

    # rule 6
    def _arguments(self, etype: str, ev: Mapping[str, Any]) -> None:
        item = self._lookup(etype, ev)
        if item is None:
            return
        if item.type != _CALL_EVENTS[etype]:
            self.add("function-call", f"{etype} on a {item.type!r} item")
            return
        field = _CALL_FIELDS[item.type]
        if item.args_done:
            self.add("function-call", f"{etype} after the {field} done event")
        if etype.endswith(".delta"):
            delta = ev.get("delta")
            if isinstance(delta, str):
                item.args += delta
            else:
                self.add("function-call", f"delta is not a string: {_q(delta)}")
            return
        item.args_done = True
        if ev.get(field) != item.args:
            self.add("function-call", f"{field} {_q(ev.get(field))} != concatenated deltas {_q(item.args)}")

    # rules 8 and 9
    def _terminal(self, etype: str, ev: Mapping[str, Any]) -> None:
        self.terminal_at = self.at
        resp = ev.get("response")
        if not isinstance(resp, Mapping):
            self.add("terminal", f"{etype} carries no response object")
            return
        self._same_response(resp.get("id"))
        for rule, message in _response_problems(resp, _TERMINALS[etype], "terminal", False):
            self.add(rule, message)
        if etype == "response.failed":
            if self.error_at is None:
                self.add("terminal", "response.failed without a preceding error event")
                self._all_closed(etype)
        else:
            for oi, item in sorted(self.items.items()):
                if not item.done:
                    self.add("item-lifecycle", f"item {item.id!r} at output_index {oi} still open at {etype}")
        output = resp.get("output")
        if not isinstance(output, list):
            return
        # For response.failed as for the others: its output is exactly
        # what the output_item.done events said, nothing taken back or added.
        done = [self.done_items[k] for k in sorted(self.done_items)]
        if [_digest(i) for i in output] != [_digest(i) for i in done]:
            got, want = [_id_of(i) for i in output], [_id_of(i) for i in done]
            detail = f"ids {got} != done items {want}" if got != want else "items differ from their output_item.done items"
            self.add("terminal", f"{etype} output: {detail}")


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, Mapping) else None


def _id_of(item: Any) -> str:
    iid = _get(item, "id")
    return iid if isinstance(iid, str) else _q(iid)


def _part_digest(part: Any) -> tuple[str, str]:
    ptype = _get(part, "type")
    text_key = _PART_TEXT_KEY.get(ptype, "text") if isinstance(ptype, str) else "text"
    return _scalar(ptype), _scalar(_get(part, text_key))


def _digest(item: Any) -> tuple[str, ...]:
    """What must agree between a done item and the terminal output: ids, texts, arguments."""
    if not isinstance(item, Mapping):
        return ("\0<not an object>",)
    field = _CALL_FIELDS.get(str(item.get("type")))
    keys = ("id", "type", "call_id", "name", field) if field else ("id", "type")
    out = [_scalar(item.get(k)) for k in keys]
    for key in ("content", "summary"):
        parts = item.get(key)
        for part in parts if isinstance(parts, list) else ():
            out += _part_digest(part)
    return tuple(out)


def validate_responses_events(events: Sequence[Mapping[str, Any]]) -> list[Violation]:
    """Rules 2-11 over already-decoded event objects, in order."""

    def run(out: list[Violation]) -> None:
        checker = _ResponsesChecker(out)
        for index, ev in enumerate(events):
            checker.feed(index, ev)
        checker.finish()

    return _guarded(run)


def validate_responses_sse(raw: bytes) -> list[Violation]:
    """Framing (rule 1) plus :func:`validate_responses_events` over a raw Responses stream."""

    def run(out: list[Violation]) -> None:
        frames, problems = _frames(raw)
        out += [Violation("framing", p, None) for p in problems]
        checker = _ResponsesChecker(out)
        index = 0
        for frame in frames:
            data = "\n".join(frame.data)
            if not frame.data:
                out.append(Violation("framing", f"event {_clip(repr(frame.event))} has no data: line", None))
                continue
            at, index = index, index + 1
            if frame.event is None:
                out.append(Violation("framing", f"event has no event: line: {_clip(data)}", at))
            if len(frame.data) > 1:
                out.append(Violation("framing", f"JSON split over {len(frame.data)} data: lines: {_clip(data)}", at))
            if data.strip() == "[DONE]":
                out.append(Violation("framing", "[DONE] does not belong in a Responses stream", at))
                continue
            obj = _loads(data)
            if not isinstance(obj, dict):
                out.append(Violation("framing", f"data is not a JSON object: {_clip(data)}", at))
                checker.lost()
                continue
            if frame.event is not None and obj.get("type") != frame.event:
                out.append(Violation("framing", f"event: {_clip(repr(frame.event))} but type {_q(obj.get('type'))}", at))
            checker.feed(at, obj)
        checker.finish()

    return _guarded(run)


# --- Chat completions -------------------------------------------------------


@dataclass(slots=True)
class _ToolCall:
    first_at: int | None
    id: Any
    args: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Choice:
    finished: bool = False
    tools: dict[int, _ToolCall] = field(default_factory=dict)


class _ChatChecker:
    def __init__(self, out: list[Violation]) -> None:
        self.out = out
        self.at: int | None = None
        self.quote = ""
        self.chunk_id: str | None = None
        self.usage_at: int | None = None
        self.error_at: int | None = None
        self.choices: dict[int, _Choice] = {}

    def add(self, rule: str, message: str) -> None:
        self.out.append(Violation(rule, f"{message} -- data: {self.quote}" if self.quote else message, self.at))

    def chunk(self, index: int, data: str) -> None:
        self.at, self.quote = index, _clip(data)
        if self.error_at is not None:
            self.add("chat-error", f"data after the error object at {self.error_at}; the error ends the stream")
            return
        obj = _loads(data)
        if not isinstance(obj, dict):
            self.add("chat-framing", "data is not a JSON object")
            return
        if obj.get("error") is not None:
            # A failed stream: reported, and it ends here (no [DONE], no finish_reason).
            self.error_at = index
            self.add("chat-error", "error object in the stream")
            return
        if obj.get("object") != "chat.completion.chunk":
            self.add("chat-framing", f"object is {_q(obj.get('object'))}, not 'chat.completion.chunk'")
        cid = obj.get("id")
        if not isinstance(cid, str):
            self.add("chat-framing", "chunk id is not a string")
        elif self.chunk_id is None:
            self.chunk_id = cid
        elif cid != self.chunk_id:
            self.add("chat-framing", f"chunk id {cid!r} differs from the first chunk's {self.chunk_id!r}")
        if not _is_int(obj.get("created")) or not isinstance(obj.get("model"), str):
            self.add("chat-framing", "chunk lacks an int created or a string model")
        choices = obj.get("choices")
        if not isinstance(choices, list):
            self.add("chat-framing", "choices is not a list")
            return
        if obj.get("usage") is not None:
            if self.usage_at is not None:
                self.add("chat-usage", f"second usage chunk (first at {self.usage_at})")
            self.usage_at = index
            if choices:
                self.add("chat-usage", "a usage chunk must have choices: []")
            for problem in _token_problems(obj["usage"], "prompt_tokens", "completion_tokens", _CHAT_DETAILS, False):
                self.add("chat-usage", problem)
        for choice in choices:
            self._choice(choice)

    def _choice(self, choice: Any) -> None:
        idx = _get(choice, "index")
        if not _is_int(idx):
            self.add("chat-framing", "choice without an integer index")
            return
        state = self.choices.get(idx)
        first = state is None
        if state is None:
            state = self.choices[idx] = _Choice()
        if state.finished:
            self.add("chat-finish", f"choice {idx} chunk after its finish_reason")
        delta = choice.get("delta")
        if not isinstance(delta, Mapping):
            self.add("chat-framing", f"choice {idx} has no delta object")
            delta = {}
        role = delta.get("role")
        if (first or role is not None) and role != "assistant":
            self.add("chat-role", f"choice {idx} delta role is {_q(role)}" + (" on its first chunk" if first else ""))
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            self.add("chat-framing", f"delta content is not a string: {_q(content)}")
        calls = delta.get("tool_calls")
        if calls is not None:
            for call in calls if isinstance(calls, list) else [calls]:
                self._tool_delta(state, call)
        reason = choice.get("finish_reason")
        if reason is not None:
            if not isinstance(reason, str) or reason not in _CHAT_FINISH:
                self.add("chat-finish", f"finish_reason {_q(reason)} is not one of {sorted(_CHAT_FINISH)}")
            state.finished = True

    def _tool_delta(self, state: _Choice, call: Any) -> None:
        t = _get(call, "index")
        if not _is_int(t):
            self.add("chat-tool-index", f"tool call delta without an integer index: {_q(call)}")
            return
        fn = call.get("function")
        if fn is None:
            fn = {}
        elif not isinstance(fn, Mapping):
            self.add("chat-tool-index", f"tool call {t} function is not an object")
            fn = {}
        tool = state.tools.get(t)
        if tool is None:
            tool = state.tools[t] = _ToolCall(self.at, call.get("id"))
            if not _nonempty_str(call.get("id")) or call.get("type") != "function" or not _nonempty_str(fn.get("name")):
                self.add("chat-tool-index", f"first delta of tool call {t} lacks id, type 'function' or function.name")
        elif call.get("id") is not None and call.get("id") != tool.id:
            self.add("chat-tool-index", f"tool call {t} changed id from {_q(tool.id)} to {_q(call.get('id'))}")
        args = fn.get("arguments")
        if isinstance(args, str):
            tool.args.append(args)
        elif args is not None:
            self.add("chat-tool-index", f"tool call {t} arguments is not a string")

    def finish(self, done: bool) -> None:
        self.at, self.quote = None, ""
        if self.error_at is not None:
            return  # what a fault cut short is not also reported as unfinished
        if not done:
            self.add("chat-done", "stream does not end with data: [DONE]")
        if not self.choices:
            self.add("chat-finish", "stream has no choice chunks, so no finish_reason")
        for idx, state in sorted(self.choices.items()):
            if not state.finished:
                self.add("chat-finish", f"choice {idx} has no finish_reason")
            for t, tool in sorted(state.tools.items()):
                args = "".join(tool.args)
                if _loads(args) is None and args.strip() != "null":
                    self.out.append(
                        Violation("chat-tool-index", f"choice {idx} tool call {t} arguments are not JSON: {_q(args)}", tool.first_at)
                    )


_CHAT_DETAILS = (("prompt_tokens_details", "cached_tokens"), ("completion_tokens_details", "reasoning_tokens"))


def validate_chat_sse(raw: bytes) -> list[Violation]:
    """Check a raw ``chat.completion.chunk`` stream.

    A stream that fails (an ``{"error": ...}`` object) gets one ``chat-error``
    violation; it must end there, without ``[DONE]`` (anything after it is a
    second ``chat-error``), and is not also reported as lacking a finish_reason.
    """

    def run(out: list[Violation]) -> None:
        frames, problems = _frames(raw)
        out += [Violation("chat-framing", p, None) for p in problems]
        checker = _ChatChecker(out)
        done_at: int | None = None
        index = 0
        for frame in frames:
            data = "\n".join(frame.data)
            if not frame.data:
                out.append(Violation("chat-framing", f"event {_clip(repr(frame.event))} has no data: line", None))
                continue
            at, index = index, index + 1
            if done_at is not None:
                out.append(Violation("chat-done", f"event after data: [DONE] (at {done_at}): {_clip(data)}", at))
                continue
            if data == "[DONE]" and checker.error_at is not None:
                out.append(Violation("chat-error", f"data: [DONE] after the error object at {checker.error_at}", at))
                continue
            if frame.event is not None:
                out.append(Violation("chat-framing", f"chat streams carry no event: lines, got {_clip(repr(frame.event))}", at))
            if len(frame.data) > 1:
                out.append(Violation("chat-framing", f"JSON split over {len(frame.data)} data: lines: {_clip(data)}", at))
            if data == "[DONE]":
                done_at = at
            else:
                checker.chunk(at, data)
        checker.finish(done_at is not None)

    return _guarded(run)


def validate_chat_completion(obj: Any) -> list[Violation]:
    """Check a non-streamed ``chat.completion`` object."""

    def run(out: list[Violation]) -> None:
        def add(rule: str, message: str) -> None:
            out.append(Violation(rule, message, None))

        if not isinstance(obj, Mapping):
            return add("object", f"chat completion is not an object: {_q(obj)}")
        if obj.get("error") is not None:
            return add("chat-error", f"error object instead of a completion: {_q(obj.get('error'))}")
        if not isinstance(obj.get("id"), str) or obj.get("object") != "chat.completion":
            add("object", f"needs a string id and object 'chat.completion': {_q(obj)}")
        if not _is_int(obj.get("created")) or not isinstance(obj.get("model"), str):
            add("object", "needs an int created and a string model")
        choices = obj.get("choices")
        if not isinstance(choices, list) or not choices:
            add("object", f"choices is not a non-empty list: {_q(choices)}")
            choices = []
        for k, choice in enumerate(choices):
            message = _get(choice, "message")
            if not _is_int(_get(choice, "index")) or not isinstance(message, Mapping):
                add("object", f"choices[{k}] needs an int index and a message object: {_q(choice)}")
                continue
            if message.get("role") != "assistant":
                add("chat-role", f"choices[{k}].message.role is {_q(message.get('role'))}, not 'assistant'")
            if message.get("content") is not None and not isinstance(message.get("content"), str):
                add("object", f"choices[{k}].message.content is not a string or null")
            calls = message.get("tool_calls")
            for t, call in enumerate(calls if isinstance(calls, list) else [] if calls is None else [calls]):
                fn = _get(call, "function")
                args = _get(fn, "arguments")
                if (
                    not _nonempty_str(_get(call, "id"))
                    or _get(call, "type") != "function"
                    or not _nonempty_str(_get(fn, "name"))
                    or not isinstance(args, str)
                    or (_loads(args) is None and args.strip() != "null")
                ):
                    add("object", f"choices[{k}].message.tool_calls[{t}] needs id, type 'function', name and JSON arguments: {_q(call)}")
            reason = choice.get("finish_reason")
            if not isinstance(reason, str) or reason not in _CHAT_FINISH:
                add("chat-finish", f"choices[{k}].finish_reason {_q(reason)} is not one of {sorted(_CHAT_FINISH)}")
        for problem in _token_problems(obj.get("usage"), "prompt_tokens", "completion_tokens", _CHAT_DETAILS, False):
            add("chat-usage", problem)

    return _guarded(run)
