"""CSV files into DuckDB temp tables: records with their real line numbers, broken ones kept as rejections.

DuckDB's ``read_csv`` was used before, and it failed three ways on real files: its sniffer guesses
quoting from a sample, so one unterminated quote switched quoting off for the whole file (good
quoted values then split apart); it numbers records, not lines; and one value above its line-size
limit refused the whole file with a wrong line number. So records are cut here:

- physical lines are cut with numpy (:func:`~cohortflow.ingest.sources.cut_lines`), as for JSON;
- a line without a quote character (nearly all lines of many files) is one record, split by DuckDB
  with ``string_split``, vectorised; so is a line made only of well-quoted values (files that quote
  every value), checked and split with a regular expression;
- any other line starts a record that Python's ``csv`` module reads (RFC 4180: a value may be quoted
  with ``"``, a ``"`` inside written ``""``, and may span lines). When such a record is broken (a
  quote that never closes, text after a closing quote), only its first line is rejected and reading
  resumes on the next line, so the lines a stray quote would swallow still load;
- a value above ``max_field_bytes`` rejects its record, naming the column and the size.

The three ways give the same values (a test compares them with the csv module on random files).

Every record keeps the number of the physical line it starts on.
"""

from __future__ import annotations

import contextlib
import csv
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from cohortflow.ingest.reasons import DEFAULT_MAX_FIELD_BYTES, TRUNCATED_PAYLOAD_CHARS
from cohortflow.ingest.sources import DEFAULT_BLOCK_BYTES, cut_lines, iter_bytes, iter_line_blocks
from cohortflow.ingest.sql import ident, lit
from cohortflow.ingest.summary import IngestError

#: Delimiters tried, in order of preference when several fit equally well.
DELIMITERS: tuple[str, ...] = (",", ";", "\t", "|")
QUOTE = '"'
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_RECORDS = 200
_SOURCE_ROW = "__source_row"


@dataclass(frozen=True)
class CsvRecords:
    """A CSV loaded into temp tables.

    ``table`` holds ``__source_row`` (the line a record starts on; the header is line 1) and one
    VARCHAR column per header field (an empty value is NULL). ``rejected`` holds
    ``(source_row, reason, detail, payload)`` for records that could not be used as rows at all
    (``malformed_row``, ``field_too_large``).
    """

    table: str
    rejected: str
    columns: tuple[str, ...]
    delimiter: str = ","

    def payload_sql(self, columns: tuple[str, ...] | None = None) -> str:
        """SQL rebuilding a record's original CSV line from its values (the raw line is not kept).

        Values are quoted only when they need it, as CSV writers do, so a normally written
        line comes back byte for byte.
        """
        d = lit(self.delimiter)
        parts = []
        for c in columns or self.columns:
            v = ident(c)
            parts.append(f"case when {v} is null then '' when contains({v}, {d}) or contains({v}, '\"') "
                         f"or contains({v}, chr(10)) or contains({v}, chr(13)) "
                         f"then '\"' || replace({v}, '\"', '\"\"') || '\"' else {v} end")
        return f"concat_ws({d}, {', '.join(parts)})"


def load_csv_records(con: duckdb.DuckDBPyConnection, path: Path, prefix: str, *,
                     max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES,
                     block_bytes: int = DEFAULT_BLOCK_BYTES) -> CsvRecords:
    """Read a CSV (plain or gzip, first line the header) into temp tables; bad records are kept, not fatal.

    Parameters
    ----------
    con : duckdb.DuckDBPyConnection
        Connection the temp tables are created on (inside the file's transaction).
    path : Path
        The CSV file.
    prefix : str
        Unique prefix for the temp tables.
    max_field_bytes : int
        A record with a value larger than this (UTF-8 bytes) is rejected ``field_too_large``.
    block_bytes : int
        Decompressed bytes read per block; bounds memory on very large files.

    Returns
    -------
    CsvRecords

    Raises
    ------
    IngestError
        The file is empty or its header cannot be read; the message names the file.
    """
    if not any(chunk.strip() for chunk in _first_chunk(path)):
        raise IngestError(f"{path}: file is empty (a CSV needs at least a header line)")
    table, rejected = f"{prefix}_csv", f"{prefix}_csv_rejected"
    splitter: _Splitter | None = None
    carry, carry_line = b"", 1
    with _csv_field_size_limit():
        for first_line, block, last in _with_last(iter_line_blocks(path, block_bytes)):
            if carry:
                block, first_line = carry + block, carry_line
            lines = _Lines(block, first_line, max_field_bytes)
            start = 0
            if splitter is None:
                header, delimiter, start = _read_header(path, lines)
                splitter = _Splitter(con, table, rejected, _column_names(header), delimiter, max_field_bytes,
                                     block_bytes)
            held = splitter.read(lines, start, final=last)
            carry, carry_line = (block[lines.offsets[held]:], lines.first + held) if held is not None else (b"", 1)
    if splitter is None:
        raise IngestError(f"{path}: file is empty (a CSV needs at least a header line)")
    return CsvRecords(table=table, rejected=rejected, columns=splitter.columns, delimiter=splitter.delimiter)


class _Lines:
    """The physical lines of one block, with what decides how each is read (all numpy, per line)."""

    def __init__(self, block: bytes, first_line_no: int, max_field_bytes: int) -> None:
        self.raw = block
        self.first = first_line_no
        self.valid, self.offsets, self.bad_utf8 = cut_lines(block)  # blocks are never empty
        self.n = len(self.offsets) - 1
        buf = np.frombuffer(block, dtype=np.uint8)
        starts, ends = self.offsets[:-1], self.offsets[1:]
        # Content end: without the newline and a CR just before it (every line has at least a byte).
        content_end = ends - (buf[ends - 1] == 10)
        content_end = content_end - ((content_end > starts) & (buf[np.maximum(content_end - 1, 0)] == 13))
        self.empty = content_end == starts
        long = (content_end - starts) > max_field_bytes
        quoted = _lines_holding(buf, ends, QUOTE)
        odd = _lines_holding(buf, ends, "\r", exclude=content_end) | long  # a CR not before the newline
        if self.bad_utf8:
            odd[list(self.bad_utf8)] = True
        # Lines that are not simply split at the delimiter: a quote may open a value spanning lines;
        # a stray CR, invalid UTF-8 and oversized values need the csv module's closer look.
        self.complex = quoted | odd
        # Lines DuckDB may still split, when the whole line is well-quoted values (most quoted files).
        self.quoted_candidate = quoted & ~odd & ~self.empty
        self.long = long.tobytes()  # bytes: the record loop indexes it, far cheaper than numpy from Python

    def text(self, i: int) -> str:
        """Line ``i`` with its newline, for the csv module (invalid bytes kept as surrogates)."""
        return self.raw[self.offsets[i]:self.offsets[i + 1]].decode("utf-8", "surrogateescape")

    def shown(self, i: int, j: int | None = None) -> str:
        """Lines ``i``..``j`` (inclusive) as stored in a payload: without the last newline, bytes escaped."""
        data = self.raw[self.offsets[i]:self.offsets[(j if j is not None else i) + 1]]
        return data.decode("utf-8", "backslashreplace").removesuffix("\n").removesuffix("\r")

    def size(self, i: int, j: int | None = None) -> int:
        """Bytes of lines ``i``..``j`` (inclusive), newlines included."""
        return int(self.offsets[(j if j is not None else i) + 1] - self.offsets[i])


def _lines_holding(buf: np.ndarray, ends: np.ndarray, char: str, exclude: np.ndarray | None = None) -> np.ndarray:
    """Per line: does it hold ``char`` (ignoring, with ``exclude``, an occurrence at that line's position)?"""
    pos = np.flatnonzero(buf == ord(char))
    found = np.zeros(len(ends), dtype=bool)
    if len(pos):
        line = np.searchsorted(ends, pos, side="right")
        if exclude is not None:
            keep = pos != exclude[line]
            pos, line = pos[keep], line[keep]
        found[line] = True
    return found


class _Splitter:
    """Turns the lines of each block into rows of the records table and of the rejected table."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: str, rejected: str, columns: tuple[str, ...],
                 delimiter: str, max_field_bytes: int, block_bytes: int) -> None:
        self.con, self.table, self.rejected = con, table, rejected
        self.columns, self.delimiter = columns, delimiter
        self.max_field_bytes, self.block_bytes = max_field_bytes, block_bytes
        cols = ", ".join(f"{ident(c)} varchar" for c in columns)
        con.execute(f"create temp table {table} ({ident(_SOURCE_ROW)} bigint, {cols})")
        con.execute(f"create temp table {rejected} (source_row bigint, reason varchar, detail varchar, payload varchar)")

    def read(self, lines: _Lines, start: int, *, final: bool) -> int | None:
        """Write the records of lines ``start``.. of one block; return the line to hold for the next block.

        Parameters
        ----------
        lines : _Lines
            The block's lines.
        start : int
            First line to read (the one after the header in the first block).
        final : bool
            No block follows: a record still open at the end is an unterminated quote.

        Returns
        -------
        int or None
            Index of the first line of a record still open at the end of the block (it and every
            line after it are read again, with the next block), or None.
        """
        good: list[tuple[int, list[str]]] = []
        bad: list[tuple[int, str, str, str]] = []
        quoted = self._split_quoted(lines, start)
        needs_csv = lines.complex & ~lines.empty & ~quoted
        taken = np.zeros(lines.n, dtype=bool)   # lines read here, by the csv module
        starts = np.flatnonzero(needs_csv)
        flags = needs_csv.tobytes()  # indexed line by line in the record loop: bytes, not numpy
        i, held = start, None
        while held is None:
            nxt = int(np.searchsorted(starts, i))
            if nxt == len(starts):
                break
            i, held = self._read_run(lines, int(starts[nxt]), flags, final, good, bad, taken)
        before = np.arange(lines.n) < (held if held is not None else lines.n)
        simple = ~lines.complex & ~lines.empty & ~taken & before
        simple[:start] = False
        # A well-quoted line read as part of an earlier multi-line value is not a record of its own.
        self._write_split(lines, simple, quoted & before & ~taken)
        self._write_rows(good)
        self._write_rejected(bad)
        return held

    def _read_run(self, lines: _Lines, k: int, needs_csv: bytes, final: bool, good: list[tuple[int, list[str]]],
                  bad: list[tuple[int, str, str, str]], taken: np.ndarray) -> tuple[int, int | None]:
        """Read records with the csv module from line ``k`` on, while each starts on a line that needs it.

        One reader serves a whole run of such lines (files that quote every value are all one run);
        the run ends at a line DuckDB can split, or at a broken record, which rejects only its first
        line: reading resumes on the next one, so lines a stray quote swallowed are read as themselves.

        Returns
        -------
        tuple[int, int or None]
            The line to continue from, and the first line of a record still open at the end of the
            block when it must be read again with the next block (else None).
        """
        pos, starting, exhausted = k, True, False

        def feed() -> Iterator[str]:
            nonlocal pos, starting, exhausted
            while pos < lines.n:
                if starting:
                    if not needs_csv[pos]:
                        return  # the next record is DuckDB's to split
                    starting = False
                pos += 1
                yield lines.text(pos - 1)
            exhausted = True

        reader = csv.reader(feed(), delimiter=self.delimiter, quotechar=QUOTE, doublequote=True, strict=True)
        while True:
            first, starting = pos, True
            try:
                row = next(reader)
            except StopIteration:
                return pos, None
            except csv.Error as exc:
                if exhausted:
                    # Open at the end of the block: it continues in the next one, unless it already
                    # spans a block's worth of bytes; then it is an unterminated quote, not a value.
                    if not final and lines.size(first, lines.n - 1) < self.block_bytes:
                        return first, first
                    problem = ("unterminated quote: the quoted value that starts on this line never closes "
                               "(the line is rejected; reading resumes on the next line)")
                elif pos - 1 == first:
                    problem = f"broken quoting: {exc}"
                else:
                    problem = (f"broken quoting: {exc}, on line {lines.first + pos - 1}: the quoted value that starts "
                               f"on this line runs until there (the line is rejected; reading resumes on the next line)")
                self._reject_first_line(lines, first, problem, bad, taken)
                return first + 1, None
            end = pos - 1
            if end > first and len(row) != len(self.columns):
                self._reject_first_line(lines, first, _width_detail(len(row), len(self.columns))
                                        + f" (record over lines {lines.first + first}-{lines.first + end}: "
                                          "the quote on this line may never close)", bad, taken)
                return first + 1, None
            taken[first:end + 1] = True
            verdict = self._judge(lines, first, end, row)
            if verdict is None:
                good.append((lines.first + first, row))
            else:
                bad.append((lines.first + first, *verdict))

    def _reject_first_line(self, lines: _Lines, k: int, problem: str, bad: list[tuple[int, str, str, str]],
                           taken: np.ndarray) -> None:
        """Reject line ``k`` alone as ``malformed_row`` (the lines after it are read again)."""
        taken[k] = True
        bad.append((lines.first + k, "malformed_row", problem, self._payload(lines, k, k)))

    def _judge(self, lines: _Lines, k: int, end: int, row: list[str]) -> tuple[str, str, str] | None:
        """(reason, detail, payload) when a well-quoted record still cannot be a row, else None."""
        bad_lines = [i for i in range(k, end + 1) if i in lines.bad_utf8] if lines.bad_utf8 else []
        if bad_lines:
            return ("malformed_row", f"CSV row is not valid UTF-8 (line {lines.first + bad_lines[0]})",
                    self._payload(lines, k, end))
        if len(row) != len(self.columns):
            return ("malformed_row", _width_detail(len(row), len(self.columns)), self._payload(lines, k, end))
        # No value is larger than its record (most records are one line, with its size flag at hand).
        if lines.long[k] if end == k else lines.size(k, end) > self.max_field_bytes:
            for name, value in zip(self.columns, row, strict=True):
                size = len(value.encode("utf-8"))
                if size > self.max_field_bytes:
                    cut = (f"; the payload keeps its first {TRUNCATED_PAYLOAD_CHARS:,} characters"
                           if self._cut(lines, k, end) else "")
                    return ("field_too_large",
                            f"column {name!r} is {size:,} bytes, above the limit of {self.max_field_bytes:,} bytes "
                            f"(max_field_bytes, --max-field-bytes){cut}", self._payload(lines, k, end))
        return None

    def _cut(self, lines: _Lines, k: int, end: int) -> bool:
        """Is the payload of lines ``k``..``end`` stored truncated? (Above the size limit and long.)"""
        size = lines.size(k, end)
        return size > self.max_field_bytes and size > TRUNCATED_PAYLOAD_CHARS

    def _payload(self, lines: _Lines, k: int, end: int) -> str:
        """The original text of lines ``k``..``end``; above the size limit, its start and its size."""
        if not self._cut(lines, k, end):
            return lines.shown(k, end)
        # 4 bytes per character at most: decode just enough of a possibly huge record.
        head = lines.raw[lines.offsets[k]:lines.offsets[k] + 4 * TRUNCATED_PAYLOAD_CHARS]
        text = head.decode("utf-8", "backslashreplace")[:TRUNCATED_PAYLOAD_CHARS]
        return f"{text}…[truncated: {lines.size(k, end):,} bytes in total]"

    def _lines_view(self, lines: _Lines, **flags: np.ndarray) -> pa.Table:
        """The block's lines as an Arrow table DuckDB reads without copying, with per-line flags."""
        return pa.table({
            "source_row": pa.array(np.arange(lines.first, lines.first + lines.n, dtype=np.int64)),
            "line": pa.LargeStringArray.from_buffers(lines.n, pa.py_buffer(lines.offsets), pa.py_buffer(lines.valid)),
            **{name: pa.array(flag) for name, flag in flags.items()},
        })

    def _split_quoted(self, lines: _Lines, start: int) -> np.ndarray:
        """Split, in DuckDB, the lines that are nothing but well-quoted values; return which lines those are.

        A line qualifies when it is entirely a sequence of values, each either unquoted (no quote,
        no delimiter) or enclosed in ``"`` with inner quotes doubled, and has the header's width:
        then it is one complete record and the csv module would read it the same way. Anything else
        (a quote opening a multi-line value, ``"a"b``, a wrong width) is left to the csv module.
        """
        candidate = lines.quoted_candidate.copy()
        candidate[:start] = False
        found = np.zeros(lines.n, dtype=bool)
        if not candidate.any():
            return found
        view, quoted = f"{self.table}_lines", f"{self.table}_quoted"
        d = lit(self.delimiter)
        one = {",": ",", ";": ";", "\t": "\\t", "|": "\\|"}[self.delimiter]       # as a regex
        inside = {",": ",", ";": ";", "\t": "\\t", "|": "|"}[self.delimiter]       # in a class
        value = lit(f'{one}("(?:[^"]|"")*"|[^"{inside}]*)')
        n = len(self.columns)
        # Every value quoted, none holding a quote (the usual export): exactly 2n quotes, and the
        # values are what lies between '"<delimiter>"'. Ten times cheaper than the regex below.
        bare = (f"starts_with(l, '\"') and ends_with(l, '\"') "
                f"and strlen(l) - strlen(replace(l, '\"', '')) = {2 * n}")
        self.con.register(view, self._lines_view(lines, candidate=candidate))
        try:
            # Otherwise every value, preceded by the delimiter (one is put before the line): the
            # matches cover the whole line exactly when it is well quoted, and then joining them
            # gives it back. (Materialized: referenced twice, the regex would otherwise run twice.)
            self.con.execute(f"""
                create or replace temp table {quoted} as
                with s as materialized (
                    select source_row, l, bare,
                           case when bare then string_split(l[2:-2], {lit(QUOTE + self.delimiter + QUOTE)})
                                else regexp_extract_all({d} || l, {value}, 1) end as f
                    from (select source_row, l, {bare} as bare
                          from (select source_row, rtrim(line, chr(13) || chr(10)) as l from {view} where candidate)))
                select source_row, bare, f from s where len(f) = {n} and (bare or array_to_string(f, {d}) = l)""")
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(view)
        rows = self.con.execute(f"select source_row from {quoted}").fetchnumpy()["source_row"]
        found[np.asarray(rows, dtype=np.int64) - lines.first] = True
        return found

    def _write_split(self, lines: _Lines, simple: np.ndarray, quoted: np.ndarray) -> None:
        """Write the one-line records DuckDB splits: quote-free lines (wrong widths rejected) and well-quoted ones."""
        n = len(self.columns)
        if quoted.any():
            view = f"{self.table}_keep"
            self.con.register(view, pa.table({"source_row": pa.array(np.flatnonzero(quoted) + lines.first)}))
            try:
                # A quoted value loses its quotes, and its doubled inner quotes become single.
                values = ", ".join(f"nullif(case when bare then f[{i}] when starts_with(f[{i}], '\"') "
                                   f"then replace(f[{i}][2:-2], '\"\"', '\"') else f[{i}] end, '')"
                                   for i in range(1, n + 1))
                self.con.execute(f"""
                    insert into {self.table}
                    select q.source_row, {values} from {self.table}_quoted q semi join {view} k using (source_row)""")
            finally:
                with contextlib.suppress(duckdb.Error):
                    self.con.unregister(view)
        self.con.execute(f"drop table if exists {self.table}_quoted")
        if not simple.any():
            return
        view, split = f"{self.table}_lines", f"{self.table}_split"
        d = lit(self.delimiter)
        self.con.register(view, self._lines_view(lines, simple=simple))
        try:
            # A simple line holds no CR or LF but its line end, so rtrim removes exactly that.
            self.con.execute(f"""
                create or replace temp table {split} as
                select source_row, line, string_split(rtrim(line, chr(13) || chr(10)), {d}) as f
                from {view} where simple""")
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(view)
        values = ", ".join(f"nullif(f[{i}], '')" for i in range(1, n + 1))
        self.con.execute(f"insert into {self.table} select source_row, {values} from {split} where len(f) = {n}")
        self.con.execute(f"""
            insert into {self.rejected}
            select source_row, 'malformed_row',
                   'CSV row does not fit the header: ' || case when len(f) > {n} then 'TOO MANY COLUMNS'
                   else 'TOO FEW COLUMNS' end || ': expected {n} field{'s' if n != 1 else ''}, found ' || len(f),
                   rtrim(line, chr(13) || chr(10))
            from {split} where len(f) <> {n}""")
        self.con.execute(f"drop table {split}")

    def _write_rows(self, good: list[tuple[int, list[str]]]) -> None:
        if not good:
            return
        rows, values = zip(*good, strict=True)
        columns = {_SOURCE_ROW: pa.array(rows, pa.int64())}
        for name, column in zip(self.columns, zip(*values, strict=True), strict=True):
            columns[name] = pa.array(column, pa.large_string())
        # An empty value is NULL, as DuckDB's CSV reader gave empty cells.
        self._insert(self.table, pa.table(columns), ", ".join(
            [ident(_SOURCE_ROW), *(f"nullif({ident(c)}, '') as {ident(c)}" for c in self.columns)]))

    def _write_rejected(self, bad: list[tuple[int, str, str, str]]) -> None:
        if not bad:
            return
        rows = list(zip(*bad, strict=True))
        self._insert(self.rejected, pa.table({
            "source_row": pa.array(rows[0], pa.int64()), "reason": pa.array(rows[1], pa.string()),
            "detail": pa.array(rows[2], pa.string()), "payload": pa.array(rows[3], pa.large_string())}))

    def _insert(self, target: str, table: pa.Table, select: str = "*") -> None:
        view = f"{target}_in"
        self.con.register(view, table)
        try:
            self.con.execute(f"insert into {target} by name select {select} from {view}")
        finally:
            with contextlib.suppress(duckdb.Error):
                self.con.unregister(view)


def _width_detail(found: int, expected: int) -> str:
    kind = "TOO MANY COLUMNS" if found > expected else "TOO FEW COLUMNS"
    return f"CSV row does not fit the header: {kind}: expected {expected} field{'s' if expected != 1 else ''}, found {found}"


def _read_header(path: Path, lines: _Lines) -> tuple[list[str], str, int]:
    """The header (first non-empty record), the delimiter, and the index of the line after the header."""
    non_empty = np.flatnonzero(~lines.empty)
    if not len(non_empty):
        raise IngestError(f"{path}: file is empty (a CSV needs at least a header line)")
    k = int(non_empty[0])
    if k in lines.bad_utf8:
        raise IngestError(f"{path}: the header (line {lines.first + k}) is not valid UTF-8")
    delimiter = _detect_delimiter(lines, k)
    fed = 0

    def feed() -> Iterator[str]:
        nonlocal fed
        for i in range(k, lines.n):
            fed += 1
            yield lines.text(i)

    try:
        header = next(csv.reader(feed(), delimiter=delimiter, quotechar=QUOTE, doublequote=True, strict=True))
    except csv.Error as exc:
        # Without a header no column can be mapped: the file is refused, not its rows.
        cause = "a quote in it never closes" if k + fed >= lines.n else str(exc)
        raise IngestError(f"{path}: the header (line {lines.first + k}) cannot be read as CSV: {cause}") from None
    return header, delimiter, k + fed


def _detect_delimiter(lines: _Lines, k: int) -> str:
    """The delimiter giving the header more than one field and the most records of the header's width."""
    end = int(np.searchsorted(lines.offsets, lines.offsets[k] + _SAMPLE_BYTES, side="right"))
    sample = lines.raw[lines.offsets[k]:lines.offsets[max(k + 1, min(end, lines.n))]].decode("utf-8", "replace")
    best, best_score = DELIMITERS[0], (False, 0.0, 0)
    for delimiter in DELIMITERS:
        try:
            reader = csv.reader((line + "\n" for line in sample.split("\n")), delimiter=delimiter, quotechar=QUOTE)
            rows = [r for _, r in zip(range(_SAMPLE_RECORDS), reader, strict=False) if r]
        except csv.Error:
            continue
        if not rows:
            continue
        width = len(rows[0])
        same = sum(len(r) == width for r in rows[1:]) / max(1, len(rows) - 1)
        score = (width > 1, same, width)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _column_names(header: list[str]) -> tuple[str, ...]:
    """Column names as DuckDB's read_csv gave them: trimmed, ``column<i>`` when empty, ``_<n>`` on repeats.

    Repeats are found case-insensitively (DuckDB identifiers are case-insensitive). NULs are
    removed: names become property keys, and Postgres text cannot hold them.
    """
    names: list[str] = []
    used = {_SOURCE_ROW}
    for i, raw in enumerate(header):
        name = raw.replace("\x00", "").strip() or f"column{i}"
        candidate, n = name, 0
        while candidate.lower() in used:
            n += 1
            candidate = f"{name}_{n}"
        used.add(candidate.lower())
        names.append(candidate)
    return tuple(names)


def _with_last(blocks: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes, bool]]:
    """``(first_line, block, is_last)`` for each block."""
    previous = None
    for item in blocks:
        if previous is not None:
            yield (*previous, False)
        previous = item
    if previous is not None:
        yield (*previous, True)


def _first_chunk(path: Path) -> Iterator[bytes]:
    """The first non-empty chunk of content (a gzip header alone decompresses to nothing)."""
    for chunk in iter_bytes(path):
        if chunk:
            yield chunk
            return


@contextlib.contextmanager
def _csv_field_size_limit() -> Iterator[None]:
    """Let the csv module read values of any size while a file is read (its default is 128 KiB).

    The limit is process-wide: it is only ever raised, and put back afterwards. Oversized values
    are judged by ``max_field_bytes`` instead, which reports the column and the size.
    """
    old = csv.field_size_limit()
    csv.field_size_limit(max(old, sys.maxsize))
    try:
        yield
    finally:
        csv.field_size_limit(old)


__all__ = ["DELIMITERS", "CsvRecords", "load_csv_records"]
