"""ReasoningSeal and ThinkSplitter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from compat_asgi.core.reasoning import ReasoningSeal, ThinkSplitter, split_think


@given(st.text())
def test_seal_round_trips_any_text(text: str) -> None:
    seal = ReasoningSeal(b"key")
    assert seal.open(seal.seal(text)) == text


def test_seal_refuses_other_keys_tampering_and_garbage() -> None:
    blob = ReasoningSeal(b"key").seal("secret plan")
    assert ReasoningSeal(b"other").open(blob) is None
    version, body, mac = blob.split(".")
    assert ReasoningSeal(b"key").open(f"{version}.{body[:-2]}xx.{mac}") is None
    for garbage in ["", "cmpt1.", "cmpt1..", "nope.a.b", "cmpt1.!!!.???", "gAAAAABlZ"]:
        assert ReasoningSeal(b"key").open(garbage) is None
    # Without a key, a random one: valid for this process only.
    assert ReasoningSeal().open(blob) is None


@given(st.text(alphabet="<>/thinkab \n", max_size=40), st.lists(st.integers(0, 60), max_size=10))
def test_think_splitter_is_blind_to_splits(text: str, cuts: list[int]) -> None:
    points = sorted({c % (len(text) + 1) for c in cuts})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)])]
    splitter = ThinkSplitter()
    thought = answer = ""
    for piece in pieces:
        t, a = splitter.feed(piece)
        thought, answer = thought + t, answer + a
    t, a = splitter.close()
    assert (thought + t, answer + a) == split_think(text)


def test_split_think_cases() -> None:
    assert split_think("  <think>plan</think>\n\nanswer") == ("plan", "answer")
    assert split_think("answer <think>not reasoning</think>") == ("", "answer <think>not reasoning</think>")
    assert split_think("<think>cut off") == ("cut off", "")
    assert split_think("<thin") == ("", "<thin")
    assert split_think("") == ("", "")
