"""docs/ingest.md documents every rejection reason the code can write, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from cohortflow.ingest import FORMATS, REASONS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "ingest.md").read_text()


def test_reason_table_matches_the_code() -> None:
    section = DOC.split("## Why a row is rejected", 1)[1].split("\n## ", 1)[0]
    table = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert table == list(REASONS)  # same codes, same order as the checks run


def test_every_format_has_a_section() -> None:
    for fmt in FORMATS:
        assert f"### `{fmt}`" in DOC
