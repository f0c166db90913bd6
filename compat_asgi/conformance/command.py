"""``compat-asgi conformance``: progress on stderr, table on stdout, exit status."""

from __future__ import annotations

import sys

import orjson

from compat_asgi.conformance.report import Result, progress_line
from compat_asgi.conformance.runner import check_arguments, run_conformance
from compat_asgi.conformance.transport import ServerUnreachable

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def main(
    *,
    base_url: str,
    model: str | None,
    api: str,
    api_key: str | None,
    json_path: str | None,
    timeout: float,
) -> int:
    try:
        check_arguments(base_url, api=api, timeout=timeout)
    except ValueError as exc:
        return _usage(str(exc))
    if json_path is not None:
        try:
            # Fail before a long run, not after it; "a" leaves an old file intact for now.
            open(json_path, "a").close()
        except OSError as exc:
            return _usage(f"cannot write --json {json_path}: {exc.strerror or exc}")

    def show(result: Result, done: int, total: int) -> None:
        print(progress_line(result, done, total), file=sys.stderr, flush=True)

    try:
        report = run_conformance(base_url, model=model, api=api, api_key=api_key, timeout=timeout, progress=show)
    except ServerUnreachable as exc:
        print(f"compat-asgi conformance: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(report.table())
    if json_path is not None:
        with open(json_path, "wb") as out:
            out.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    return EXIT_OK if report.ok else EXIT_FAILED


def _usage(message: str) -> int:
    print(f"compat-asgi conformance: {message}", file=sys.stderr)
    return EXIT_USAGE
