"""Smoke check: the benchmarks run end to end in quick mode and print every ratio.

Never a timed assertion: the numbers depend on the machine. The real runs
are ``python -m benchmarks`` (see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROWS = ("1", "1b", "1c", "2a", "2b", "3a", "3b", "3c", "3d", "3e", "3f", "4a", "4b", "4c", "4d", "4e", "4f", "5a", "5b")
# "<id>  <label>  <value>  <target>  <PASS|MISS|info>": the value is a ratio or a measurement.
ROW = r"^{}\s+\S.*?\s+-?\d+(\.\d+)?( ?x| ms| conns)\s+\S.*?\s+(PASS|MISS|info)\b"


def test_quick_benchmarks_run_and_print_every_ratio() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,  # ~10 s on an idle machine; the margin is for shared CI runners
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    for row in ROWS:
        assert re.search(ROW.format(re.escape(row)), done.stdout, re.MULTILINE), (row, done.stdout)
