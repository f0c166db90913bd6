"""Properties of the byte formats: the record codec, and the Redis URL parser never leaking a secret."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given
from hypothesis import strategies as st

from compat_asgi.store import StoredResponse
from compat_asgi.store.codec import decode_record, encode_record
from compat_asgi.store.redis_url import parse_redis_url

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(
    response=st.dictionaries(st.text(), json_values, max_size=5),
    input_items=st.lists(st.dictionaries(st.text(), json_values, max_size=3), max_size=3),
    events=st.none() | st.binary(),
    owner=st.none() | st.text(),
)
def test_record_codec_round_trips(
    response: dict[str, Any], input_items: list[dict[str, Any]], events: bytes | None, owner: str | None
) -> None:
    record = StoredResponse("resp_1", owner, response, input_items, events, 1_700_000_000)
    assert decode_record(encode_record(record)) == record


# A distinctive prefix: a short secret like "None" would be found in any repr.
secrets = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=2, max_size=12).map("s3cr".__add__)


@given(
    secret=secrets,
    scheme=st.sampled_from(["redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "postgres"]),
    tail=st.text(max_size=30),
)
def test_redis_url_errors_never_echo_the_password(secret: str, scheme: str, tail: str) -> None:
    from urllib.parse import quote

    encoded = quote(secret, safe="")
    # An "@" in the host part would make the password end at the last one (as it should).
    assume(secret not in tail and encoded not in tail and secret not in scheme and "@" not in tail)
    url = f"{scheme}://user:{encoded}@{tail}"
    try:
        parsed = parse_redis_url(url)
    except ValueError as exc:
        assert encoded not in str(exc) and secret not in str(exc)
        return
    assert parsed.password == secret
    assert secret not in repr(parsed) and secret not in parsed.shown() and encoded not in parsed.shown()
