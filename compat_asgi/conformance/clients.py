"""Real-client profiles: request bodies a real client sent, replayed as cases.

``--client codex`` replays what the Codex CLI sends (captured from the real
binary, version in each file name, see ``fixtures/codex/README.md``):
``namespace`` tools, tools as an ``additional_tools`` input item, a
``function_call_output`` without ``call_id``, ``store: false`` with
``include: ["reasoning.encrypted_content"]``. A server passes a case when it
accepts the body unchanged (only ``model`` is replaced) and streams a valid
answer; with ``store: false`` any reasoning item it returns must carry
``encrypted_content``, since Codex sends that back instead of an id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any

import orjson

from compat_asgi.conformance.stored import Outcome
from compat_asgi.conformance.suite import Context, SuiteCase, create_and_check, violation
from compat_asgi.validate import Violation

__all__ = ["CODEX", "codex_fixtures"]

_NAME = re.compile(r"^(?P<case>[a-z_]+)\.codex-(?P<version>[0-9.]+)\.json$")
_ABOUT = {
    "first_turn": "first request of a session: client_metadata, a namespace tool, web_search",
    "tool_output": "function_call + function_call_output with a client-made fco_ id",
    "namespaced_call": "a call to a namespaced tool sent back with its namespace",
    "output_without_call_id": "a function_call_output with name + namespace and no call_id",
    "additional_tools": "tools sent as an additional_tools input item, no tools key",
    "tool_search": "a client-executed tool_search tool and a custom apply_patch tool",
}


@cache
def codex_fixtures() -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """(case, Codex version, body) for every captured request, sorted by case."""
    folder = resources.files("compat_asgi.conformance").joinpath("fixtures", "codex")
    found: list[tuple[str, str, dict[str, Any]]] = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match is not None:
            found.append((match["case"], match["version"], orjson.loads(entry.read_bytes())))
    return tuple(sorted(found, key=lambda row: row[0]))


def _encrypted_reasoning(final: Mapping[str, Any]) -> list[Violation]:
    for k, item in enumerate(final.get("output") or ()):
        if isinstance(item, Mapping) and item.get("type") == "reasoning" and not item.get("encrypted_content"):
            return [violation(f"output[{k}] is a reasoning item without encrypted_content, which store: false with "
                       "include reasoning.encrypted_content asks for", "codex")]
    return []


def _terminal(final: Mapping[str, Any]) -> list[Violation]:
    status = final.get("status")
    return [] if status in ("completed", "incomplete") else [violation(f"status {status!r} for a Codex request", "codex")]


def _replay(body: dict[str, Any]) -> Any:
    def run(ctx: Context) -> Outcome:
        sent = {k: v for k, v in body.items() if k not in ("model", "stream")}
        return create_and_check(ctx, sent, stream=True, checks=(_terminal, _encrypted_reasoning))

    return run


def _cases() -> tuple[SuiteCase, ...]:
    return tuple(
        SuiteCase(
            f"codex-{version}:{case}",
            f"Codex {version} request body, replayed unchanged but for model: {_ABOUT.get(case, case)}",
            "a real client's request: the public suite sends none of these shapes",
            True,
            _replay(body),
            "stream",
        )
        for case, version, body in codex_fixtures()
    )


CODEX: tuple[SuiteCase, ...] = _cases()
