"""Numbers and tables in words: what the CLI, the demo and the Dagster UI's markdown share."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def number(value: Any, spec: str) -> str:
    """``value`` formatted with ``spec`` (``".3f"``, ``".1%"``, ``","``), or an en dash when it is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "–"
    return format(value, spec)


def markdown_table(columns: Sequence[tuple[str, str]], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table: ``columns`` are (title, "l" | "r") pairs, ``rows`` their cells."""
    lines = ["| " + " | ".join(title for title, _ in columns) + " |",
             "|" + "|".join("---:" if align == "r" else "---" for _, align in columns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
