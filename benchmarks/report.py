"""The result table: one row per ratio, with its target and PASS/MISS."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Results", "Row", "format_table"]


@dataclass
class Row:
    id: str  # stable: "1", "2a" ... (the smoke test looks for these)
    label: str
    value: float
    unit: str  # "x" (a ratio), "ms", ...
    target: str  # "<= 3.0x", "info" ...
    ok: bool | None  # None: no target, shown as "info"
    detail: str = ""  # absolute numbers, which vary between machines

    @property
    def verdict(self) -> str:
        return "info" if self.ok is None else "PASS" if self.ok else "MISS"


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def to_json(self, machine: dict[str, Any]) -> str:
        return json.dumps(
            {"machine": machine, "rows": [asdict(r) | {"verdict": r.verdict} for r in self.rows]}, indent=2
        )


def _value(row: Row) -> str:
    if row.unit == "x":
        return f"{row.value:.2f}x"
    if float(row.value).is_integer() and row.unit != "ms":
        return f"{int(row.value)} {row.unit}"
    return f"{row.value:.{1 if row.value >= 10 else 2}f} {row.unit}"


def format_table(rows: list[Row]) -> str:
    headers = ("#", "measurement", "value", "target", "result", "absolute (this machine)")
    table = [(r.id, r.label, _value(r), r.target, r.verdict, r.detail) for r in rows]
    widths = [
        max(len(h), *(len(t[i]) for t in table)) if table else len(h) for i, h in enumerate(headers[:-1])
    ]
    lines = []
    for cells in [headers, *table]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
        if cells is headers:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len(headers[-1]))
    return "\n".join(line.rstrip() for line in lines)
