"""Byte encoding of records for backends that keep one opaque value per key.

A record is ``<orjson header>\\n<events>``: compact orjson never emits a raw
newline, so the first ``\\n`` splits the two, and the SSE bytes are kept
verbatim instead of being escaped or base64-inflated inside JSON.
"""

from __future__ import annotations

from typing import Any

import orjson

from compat_asgi.store.base import StoredResponse, StoreError

__all__ = ["encode_record", "decode_record", "encode_parts", "decode_parts", "encode_item", "decode_item"]


def encode_parts(record: StoredResponse) -> tuple[bytes, bytes | None]:
    """The header (everything but the events) encoded, and the events as they are.

    For a store that can keep two values per record (memory): the events,
    often the largest part, are never copied.
    """
    header = orjson.dumps(
        {
            "id": record.id,
            "owner": record.owner,
            "created_at": record.created_at,
            "response": record.response,
            "input_items": record.input_items,
            "streamed": record.events is not None,
        }
    )
    return header, record.events


def decode_parts(header: bytes, events: bytes | None) -> StoredResponse:
    try:
        fields: dict[str, Any] = orjson.loads(header)
        return StoredResponse(
            id=fields["id"],
            owner=fields["owner"],
            response=fields["response"],
            input_items=fields["input_items"],
            events=(events or b"") if fields["streamed"] else None,
            created_at=fields["created_at"],
        )
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        # Another program wrote under our key prefix, or a format we do not know.
        raise StoreError(f"stored response is corrupt or of an unknown format: {exc}") from None


def encode_record(record: StoredResponse) -> bytes:
    header, events = encode_parts(record)
    return header + b"\n" + (events or b"")


def decode_record(data: bytes) -> StoredResponse:
    header, _, events = data.partition(b"\n")
    return decode_parts(header, events)


def encode_item(item: dict[str, Any]) -> bytes:
    return orjson.dumps(item)


def decode_item(data: bytes) -> dict[str, Any]:
    item: dict[str, Any] = orjson.loads(data)
    return item
