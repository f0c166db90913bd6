"""``python -m benchmarks [--quick] [--only NAME[,NAME]] [--json PATH] [--profile [WAY]]``.

Prints a table of ratios measured in this run, each with its target from
issue 8 and PASS/MISS. Absolute numbers are printed too, but they depend on
the machine; the ratios are what we track. Exits 0 whether targets pass or
miss (benchmarks are not tests); non-zero only if a benchmark failed to run.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable

from benchmarks import core, http_proxy, inprocess, levers, memory, procs, startup
from benchmarks.common import Config
from benchmarks.report import Results, format_table

BENCHMARKS: dict[str, tuple[str, Callable[[Config, Results], None]]] = {
    "core": ("1  core translator per event vs the framing floor", core.run),
    "inprocess": ("2  middleware end to end, in-process upstream", inprocess.run),
    "http": ("3  HTTP: direct, passthrough, translating", http_proxy.run),
    "memory": ("4  memory of the middleware server", memory.run),
    "startup": ("5  import and start-up time", startup.run),
    "levers": ("6  issue 17's levers before/after (needs compat-asgi[fast])", levers.run),
}
#: Run only when named with --only: needs the optional [fast] packages.
OPT_IN = {"levers"}


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, a few seconds each")
    parser.add_argument("--only", metavar="NAME[,NAME]", help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument(
        "--uvicorn",
        choices=["plain", "standard"],
        default="plain",
        help="servers on asyncio+h11 (plain, the default: every install has them) or on "
        "uvloop+httptools (standard, as uvicorn[standard]; they must be importable)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="translating",
        choices=["translating", "passthrough", "translating-latency", "passthrough-latency"],
        help="instead of the table: profile the middleware server under HTTP load "
        "(concurrent long streams, or with -latency sequential short ones)",
    )
    parser.add_argument(
        "--litellm", metavar="PATH", help="litellm executable for the optional comparison row of --only levers"
    )
    args = parser.parse_args(argv)
    if args.litellm:
        levers.LITELLM[:] = [args.litellm]
    cfg = Config(quick=args.quick)
    if args.uvicorn == "standard":
        procs.SERVER_ARGS[:] = ["--loop", "uvloop", "--http", "httptools"]
    if args.profile:
        way, _, latency = args.profile.partition("-")
        print(http_proxy.profile(cfg, way, latency=bool(latency)))
        return 0
    names = [n for n in BENCHMARKS if n not in OPT_IN] if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    info = machine()
    print(f"machine: {info['cpus']} CPUs, {info['cpu']}, Python {info['python']} ({info['platform']})")
    print(
        f"mode: {'quick (smoke sizes: ratios are indicative only)' if cfg.quick else 'full'}; "
        f"servers: uvicorn on {'uvloop + httptools' if procs.SERVER_ARGS else 'asyncio + h11'}",
        flush=True,
    )
    results = Results()
    failed = []
    for name in names:
        title, run = BENCHMARKS[name]
        print(f"running {title} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            run(cfg, results)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        print(f"  done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    print()
    print(format_table(results.rows))
    if args.json:
        with open(args.json, "w") as out:
            out.write(results.to_json(info))
    if failed:
        print(f"\nfailed to run: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
