"""core.compaction: sealing summaries, and compaction items in a request's input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compat_asgi.core.compaction import (
    compacted_output,
    estimate_tokens,
    open_summary,
    seal_summary,
    summary_request,
)
from compat_asgi.core.options import RequestOptions
from compat_asgi.core.reasoning import ReasoningSeal
from compat_asgi.core.requests import responses_to_chat
from compat_asgi.errors import InvalidRequest

SEAL = ReasoningSeal(b"k" * 32)


@given(st.text())
def test_seal_round_trip(summary: str) -> None:
    assert open_summary(SEAL, seal_summary(SEAL, summary)) == summary


def test_only_this_servers_compactions_open() -> None:
    blob = seal_summary(SEAL, "the user is Ada")
    assert open_summary(ReasoningSeal(b"x" * 32), blob) is None
    assert open_summary(None, blob) is None
    # A sealed reasoning text is not a compaction, though it shares the key.
    assert open_summary(SEAL, SEAL.seal("the user is Ada")) is None
    assert open_summary(SEAL, "not-a-blob") is None


def test_compaction_item_becomes_the_summary_where_it_stands() -> None:
    options = RequestOptions(reasoning_seal=SEAL)
    body = {
        "model": "m",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "user", "content": "hi"},
            {"type": "compaction", "id": "cmp_1", "encrypted_content": seal_summary(SEAL, "Ada likes tea.")},
            {"role": "user", "content": "What do I like?"},
        ],
    }
    messages = responses_to_chat(body, options).chat["messages"]
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Summary of the earlier conversation:\nAda likes tea."},
        {"role": "user", "content": "What do I like?"},
    ]


@pytest.mark.parametrize(
    ("item", "param"),
    [
        ({"type": "compaction"}, "input[0].encrypted_content"),
        ({"type": "compaction", "encrypted_content": 5}, "input[0].encrypted_content"),
        ({"type": "compaction", "encrypted_content": SEAL.seal("reasoning")}, "input[0].encrypted_content"),
    ],
)
def test_bad_compaction_items(item: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as error:
        responses_to_chat({"model": "m", "input": [item]}, RequestOptions(reasoning_seal=SEAL))
    assert error.value.param == param


def test_summary_request_and_output_shape() -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [], "temperature": 0.2, "stream": True}
    request = summary_request(chat)
    assert request["stream"] is False and "temperature" not in request and request["tools"] == []
    assert request["messages"][0] == {"role": "user", "content": "hi"} and request["messages"][-1]["role"] == "user"
    assert chat["messages"] == [{"role": "user", "content": "hi"}]  # not mutated

    items = [
        {"type": "message", "role": "user", "id": "msg_1", "content": [{"type": "input_text", "text": "a"}]},
        {"type": "message", "role": "assistant", "id": "msg_2", "content": [{"type": "output_text", "text": "b"}]},
        {"type": "function_call", "id": "fc_1", "call_id": "c", "name": "f", "arguments": "{}"},
    ]
    compaction = {"type": "compaction", "id": "cmp_1", "encrypted_content": "x"}
    assert compacted_output(items, compaction) == [{**items[0], "status": "completed"}, compaction]
    assert estimate_tokens([{"role": "user", "content": "x" * 400}]) == len('[{"role":"user","content":"' + "x" * 400 + '"}]') // 4
