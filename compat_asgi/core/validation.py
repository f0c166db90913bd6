"""Validators shared by the request mappings of both directions.

Each rejects with :class:`~compat_asgi.errors.InvalidRequest` whose ``param``
names the exact path and whose ``code`` follows OpenAI's
(``missing_required_parameter``, ``invalid_type``, ``invalid_value``, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from compat_asgi.errors import InvalidRequest

__all__ = [
    "json_type", "type_error", "missing", "bad_value", "unsupported", "string", "req_str",
    "opt_str", "opt_bool", "opt_enum", "opt_int", "opt_number", "opt_dict", "as_dict",
    "type_of", "checked_metadata", "check_keys", "required_model", "Ignored",
    "IGNORED_MAX_NAMES", "IGNORED_MAX_NAME",
]

METADATA_MAX_PAIRS = 16
METADATA_MAX_KEY = 64
METADATA_MAX_VALUE = 512


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def type_error(param: str, expected: str, value: object) -> NoReturn:
    raise InvalidRequest(
        f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead.",
        param=param,
        code="invalid_type",
    )


def missing(param: str) -> NoReturn:
    raise InvalidRequest(
        f"Missing required parameter: '{param}'.",
        param=param,
        code="missing_required_parameter",
    )


def bad_value(param: str, value: str, allowed: tuple[str, ...]) -> NoReturn:
    choices = ", ".join(f"'{a}'" for a in allowed)
    raise InvalidRequest(
        f"Invalid value for '{param}': '{value}'. Supported values are: {choices}.",
        param=param,
        code="invalid_value",
    )


def unsupported(param: str, message: str, code: str = "unsupported_value") -> NoReturn:
    raise InvalidRequest(message, param=param, code=code)


def string(value: object, param: str, *, non_empty: bool = False) -> str:
    if not isinstance(value, str):
        type_error(param, "a string", value)
    if non_empty and not value:
        raise InvalidRequest(
            f"Invalid '{param}': empty string. Expected a non-empty string.",
            param=param,
            code="invalid_value",
        )
    return value


def req_str(obj: dict[str, Any], key: str, param: str, *, non_empty: bool = False) -> str:
    value = obj.get(key)
    if value is None:
        missing(f"{param}.{key}")
    return string(value, f"{param}.{key}", non_empty=non_empty)


def opt_str(obj: dict[str, Any], key: str, param: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    return string(value, param)


def opt_bool(obj: dict[str, Any], key: str, param: str) -> bool | None:
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return value
    type_error(param, "a boolean", value)


def opt_enum(obj: dict[str, Any], key: str, param: str, allowed: tuple[str, ...]) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        type_error(param, "a string", value)
    if value not in allowed:
        bad_value(param, value, allowed)
    return value


def opt_int(obj: dict[str, Any], key: str, param: str, lo: int, hi: int | None = None) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        type_error(param, "an integer", value)
    if value < lo:
        raise InvalidRequest(
            f"Invalid '{param}': integer below minimum value. "
            f"Expected a value >= {lo}, but got {value} instead.",
            param=param,
            code="integer_below_min_value",
        )
    if hi is not None and value > hi:
        raise InvalidRequest(
            f"Invalid '{param}': integer above maximum value. "
            f"Expected a value <= {hi}, but got {value} instead.",
            param=param,
            code="integer_above_max_value",
        )
    return value


def opt_number(obj: dict[str, Any], key: str, param: str, lo: float, hi: float) -> int | float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        type_error(param, "a number", value)
    # Written so that NaN fails too.
    if not (lo <= value <= hi):
        raise InvalidRequest(
            f"Invalid '{param}': expected a number between {lo:g} and {hi:g}, but got {value} instead.",
            param=param,
            code="invalid_value",
        )
    return value


def opt_dict(obj: dict[str, Any], key: str, param: str) -> dict[str, Any] | None:
    value = obj.get(key)
    if value is None or isinstance(value, dict):
        return value
    type_error(param, "an object", value)


def as_dict(value: object, param: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    type_error(param, "an object", value)


def type_of(obj: dict[str, Any], param: str) -> str:
    value = obj.get("type")
    if value is None:
        missing(f"{param}.type")
    return string(value, f"{param}.type")


# --------------------------------------------------------------------------
# Content parts


def checked_metadata(body: dict[str, Any]) -> dict[str, Any]:
    metadata = opt_dict(body, "metadata", "metadata")
    if metadata is None:
        return {}
    if len(metadata) > METADATA_MAX_PAIRS:
        raise InvalidRequest(
            f"Invalid 'metadata': too many properties. Expected at most "
            f"{METADATA_MAX_PAIRS}, but got {len(metadata)} instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if not isinstance(key, str) or len(key) > METADATA_MAX_KEY:
            raise InvalidRequest(
                f"Invalid 'metadata': keys must be strings of at most {METADATA_MAX_KEY} characters.",
                param="metadata",
                code="invalid_value",
            )
        if not isinstance(value, str):
            type_error(f"metadata.{key}", "a string", value)
        if len(value) > METADATA_MAX_VALUE:
            raise InvalidRequest(
                f"Invalid 'metadata.{key}': string too long. Expected at most "
                f"{METADATA_MAX_VALUE} characters, but got {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return metadata



# Bounds on what one request can make the server report: the names travel in a
# response header and a log line, so neither their number nor length may grow
# with what a client sends.
IGNORED_MAX_NAMES = 32
IGNORED_MAX_NAME = 64
_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\[\]-]")


class Ignored:
    """What a request sent that the server accepted without using: unknown
    fields, hosted tools and item types a chat backend cannot run.

    A translation layer trails its clients, so by default these are reported,
    not refused; ``strict`` restores OpenAI's 400 instead. Names are reduced to
    a safe alphabet (client bytes never reach a header or log line as sent),
    cut to :data:`IGNORED_MAX_NAME` characters and capped at
    :data:`IGNORED_MAX_NAMES`, past which only a count is kept.
    """

    __slots__ = ("strict", "_names", "overflow")

    def __init__(self, *, strict: bool = False) -> None:
        self.strict = strict
        self._names: dict[str, None] = {}
        self.overflow = 0

    def add(self, name: str) -> None:
        name = _UNSAFE_NAME_CHARS.sub("_", name[: IGNORED_MAX_NAME * 2])[:IGNORED_MAX_NAME]
        if name in self._names:
            return
        if len(self._names) >= IGNORED_MAX_NAMES:
            self.overflow += 1
        else:
            self._names[name] = None

    def unknown(self, key: object, param: str, name: str) -> None:
        """An unrecognised field ``key`` at ``param``: reported as ``name``, or
        OpenAI's ``unknown_parameter`` in strict mode."""
        if self.strict:
            raise InvalidRequest(
                f"Unrecognized request argument supplied: {param}",
                param=param,
                code="unknown_parameter",
            )
        self.add(name)

    def fields(self, obj: dict[str, Any], known: frozenset[str], param: str, name: str) -> None:
        """Check ``obj``'s keys against ``known``; each other key is reported as
        ``{name}.{key}`` (``param`` is its exact path for strict mode's 400)."""
        for key in obj:
            if key not in known:
                self.unknown(key, f"{param}.{key}", f"{name}.{key}")

    @property
    def names(self) -> tuple[str, ...]:
        """The names, then ``+N`` for N more past the cap (``+`` is outside the
        names' alphabet, so a client cannot forge the marker)."""
        if self.overflow:
            return (*self._names, f"+{self.overflow}")
        return tuple(self._names)


def check_keys(
    body: object,
    known: frozenset[str],
    unsupported_keys: Mapping[str, str],
    ignored: Ignored | None = None,
) -> dict[str, Any]:
    """The body as an object whose top-level keys are known; others are
    reported to ``ignored`` (OpenAI's "Unrecognized request argument" without
    one, or when it is strict). Keys a backend cannot honour are refused with
    the reason ``unsupported_keys`` gives."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"The request body must be a JSON object, but got {json_type(body)} instead.",
            param=None,
            code="invalid_type",
        )
    for key, value in body.items():
        if key not in known:
            (ignored or Ignored(strict=True)).unknown(key, str(key), str(key))
            continue
        if value is not None and key in unsupported_keys:
            unsupported(key, f"'{key}' is not supported by this server{unsupported_keys[key]}", code="unsupported_parameter")
    return body


def required_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if model is None:
        missing("model")
    return string(model, "model", non_empty=True)
