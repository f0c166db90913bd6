"""``compat-asgi conformance``: progress on stderr, table on stdout, exit status.

One ``--base-url`` prints that server's table; several print one matrix, the
servers side by side. ``--json`` and ``--html`` write the same results for
machines and for people.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import orjson

from compat_asgi.conformance.compare import matrix_html, matrix_json, matrix_table
from compat_asgi.conformance.report import Report, Result, progress_line
from compat_asgi.conformance.runner import check_arguments, list_cases, run_conformance
from compat_asgi.conformance.transport import ServerUnreachable

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def main(
    *,
    base_url: str | Sequence[str] | None,
    model: str | None,
    api: str,
    api_key: str | None,
    json_path: str | None,
    timeout: float,
    suite: str = "all",
    clients: Sequence[str] = (),
    html_path: str | None = None,
    names: Sequence[str] = (),
    list_only: bool = False,
    file_search_vector_store_id: str | None = None,
    offline_web_search: bool = False,
) -> int:
    urls = [base_url] if isinstance(base_url, str) else list(base_url or ())
    if list_only:
        return _list(suite, tuple(clients))
    if not urls:
        return _usage("--base-url is required (give it several times to compare servers)")
    if len(names) > len(urls):
        return _usage("more --name than --base-url")
    try:
        for url in urls:
            check_arguments(url, api=api, timeout=timeout, suite=suite, clients=tuple(clients))
    except ValueError as exc:
        return _usage(str(exc))
    for flag, path in (("--json", json_path), ("--html", html_path)):
        if path is not None:
            try:
                # Fail before a long run, not after it; "a" leaves an old file intact for now.
                open(path, "a").close()
            except OSError as exc:
                return _usage(f"cannot write {flag} {path}: {exc.strerror or exc}")

    def show(result: Result, done: int, total: int) -> None:
        print(progress_line(result, done, total), file=sys.stderr, flush=True)

    reports: list[Report] = []
    for k, url in enumerate(urls):
        label = names[k] if k < len(names) else None
        try:
            reports.append(run_conformance(url, model=model, api=api, api_key=api_key, timeout=timeout,
                                           progress=show, suite=suite, clients=tuple(clients), label=label,
                                           file_search_vector_store_id=file_search_vector_store_id,
                                           offline_web_search=offline_web_search))
        except ServerUnreachable as exc:
            print(f"compat-asgi conformance: {exc}", file=sys.stderr)
            if len(urls) == 1:
                return EXIT_FAILED
    if not reports:
        return EXIT_FAILED
    print(reports[0].table() if len(urls) == 1 else matrix_table(reports))
    if json_path is not None:
        data = reports[0].to_json() if len(urls) == 1 else matrix_json(reports)
        with open(json_path, "wb") as out:
            out.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n")
    if html_path is not None:
        with open(html_path, "w", encoding="utf-8") as page:
            page.write(matrix_html(reports))
    ok = len(reports) == len(urls) and all(r.ok for r in reports)
    return EXIT_OK if ok else EXIT_FAILED


def _list(suite: str, clients: tuple[str, ...]) -> int:
    try:
        rows = list_cases(suite, clients)
    except ValueError as exc:
        return _usage(str(exc))
    for suite_name, case, mode, about, stricter in rows:
        print(f"{suite_name:<14} {case} ({mode})\n    asserts: {about}\n    stricter: {stricter}")
    print(f"\n{len(rows)} cases")
    return EXIT_OK


def _usage(message: str) -> int:
    print(f"compat-asgi conformance: {message}", file=sys.stderr)
    return EXIT_USAGE
