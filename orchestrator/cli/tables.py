"""Plain-text tables that fit the terminal without cutting an identifier.

Rich's tables shrink every column when a row is too wide and cut identifiers
with an ellipsis (`catego…`, `2026-1…`), which is what on-call reads first. Here
a command offers layouts from the roomiest to the most compact; the first whose
identifier columns fit the width is used. Identifier cells are never cut (a
cell may hold several lines, e.g. one host per line); free-text columns wrap
into the width left; "spill" columns go on a labelled line under their row.
With no width (`--wide`) every column is printed whole on one line.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.text import Text

GAP = "  "
MIN_WRAP = 16
"""Narrowest a free-text column may get before the layout counts as not fitting."""


@dataclass(frozen=True, slots=True)
class Col:
    header: str
    cell: Callable[[Any], str]
    """The cell's text; a newline puts the next value on its own line."""
    wrap: bool = False
    """Free text: wrapped to fit. Never set for identifiers."""
    spill: bool = False
    """Printed as `header: value` on a line under the row instead of in a column."""
    right: bool = False


def terminal_width(console: Console) -> int:
    """$COLUMNS when set (tests, scripts), else what the console detected (80 when piped)."""
    cols = os.environ.get("COLUMNS", "")
    return int(cols) if cols.isdigit() and int(cols) > 0 else console.width


def _lines(text: str) -> list[str]:
    return text.split("\n") if text else [""]


def _natural(col: Col, cells: list[str]) -> int:
    return max(len(ln) for c in [col.header, *cells] for ln in _lines(c))


def _fits(cols: Sequence[Col], cells: list[list[str]], width: int) -> bool:
    shown = [(i, c) for i, c in enumerate(cols) if not c.spill]
    fixed = sum(_natural(c, [r[i] for r in cells]) for i, c in shown if not c.wrap)
    wraps = sum(1 for _, c in shown if c.wrap)
    return fixed + len(GAP) * (len(shown) - 1) + MIN_WRAP * wraps <= width


def choose(layouts: Sequence[Sequence[Col]], rows: Sequence[Any], width: int | None) -> Sequence[Col]:
    """The first layout that fits `width` (the last one when none does)."""
    if width is None:
        return layouts[0]
    for cols in layouts:
        if _fits(cols, [[c.cell(r) for c in cols] for r in rows], width):
            return cols
    return layouts[-1]


def render(layouts: Sequence[Sequence[Col]], rows: Sequence[Any],
           width: int | None) -> tuple[list[str], list[str]]:
    """(header lines, row lines); a row takes several lines when a cell holds several."""
    cols = choose(layouts, rows, width)
    cells = [[c.cell(r) for c in cols] for r in rows]
    shown = [i for i, c in enumerate(cols) if not c.spill]
    widths = {i: _natural(cols[i], [r[i] for r in cells]) for i in shown}
    wraps = [i for i in shown if cols[i].wrap]
    if width is not None and wraps:
        fixed = sum(w for i, w in widths.items() if i not in wraps) + len(GAP) * (len(shown) - 1)
        share = max(MIN_WRAP, (width - fixed) // len(wraps))
        for i in wraps:
            widths[i] = min(widths[i], share)

    def line(parts: dict[int, str]) -> str:
        return GAP.join(parts[i].rjust(widths[i]) if cols[i].right else parts[i].ljust(widths[i])
                        for i in shown).rstrip()

    out = _block(line, {i: _lines(cols[i].header) for i in shown})
    head = len(out)
    for row in cells:
        split = {}
        for i in shown:
            text = row[i]
            if cols[i].wrap and width is not None:
                split[i] = [w for ln in _lines(text) for w in (textwrap.wrap(ln, widths[i]) or [""])]
            else:
                split[i] = _lines(text)
        out += _block(line, split)
        for i, c in enumerate(cols):
            if c.spill and row[i]:
                out += _spill(c.header, row[i], width)
    return out[:head], out[head:]


def _block(line: Callable[[dict[int, str]], str], split: dict[int, list[str]]) -> list[str]:
    """The lines of one row whose cells hold several lines each."""
    height = max((len(v) for v in split.values()), default=1)
    return [line({i: v[k] if k < len(v) else "" for i, v in split.items()}) for k in range(height)]


def _spill(label: str, text: str, width: int | None) -> list[str]:
    """`  label: a, b, c` wrapped between values, never inside one."""
    head = f"  {label}: "
    items = [x for x in text.split("\n") if x]
    if width is None:
        return [head + ", ".join(items)]
    return textwrap.wrap(", ".join(items), width, initial_indent=head, subsequent_indent=" " * len(head),
                         break_long_words=False, break_on_hyphens=False)


def print_table(console: Console, layouts: Sequence[Sequence[Col]], rows: Sequence[Any], *, wide: bool) -> None:
    head, body = render(layouts, rows, None if wide else terminal_width(console))
    for ln in head:
        console.print(Text(ln, style="bold"), soft_wrap=True)
    for ln in body:
        console.print(Text(ln), soft_wrap=True)
