"""Reading source files: fingerprints, (gzipped) lines as Arrow, CSV records via DuckDB.

Lines are cut in Python with numpy (exact 1-based line numbers, any byte content) and
handed to DuckDB as an Arrow table without copying, so that all parsing and checking
happens vectorised in SQL.
"""

from __future__ import annotations

import codecs
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from cohortflow.ingest.sql import ident, lit
from cohortflow.ingest.summary import IngestError

GZIP_MAGIC = b"\x1f\x8b"
#: Decompressed bytes handled per block. Bounds memory for multi-GB exports while
#: keeping the per-block SQL overhead (one anti-join scan of raw.events) small.
DEFAULT_BLOCK_BYTES = 256 * 1024 * 1024
_READ_CHUNK = 16 * 1024 * 1024


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file's bytes as stored (compressed files are hashed compressed)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name says)."""
    with path.open("rb") as f:
        return f.read(2) == GZIP_MAGIC


def iter_bytes(path: Path) -> Iterator[bytes]:
    """Yield the file's content, decompressed when gzipped (multi-member gzip included).

    Raises
    ------
    IngestError
        Corrupt or truncated gzip data; the message names the file.
    """
    gz = is_gzip(path)
    with path.open("rb") as f:
        if not gz:
            while chunk := f.read(_READ_CHUNK):
                yield chunk
            return
        d = zlib.decompressobj(wbits=31)
        try:
            while chunk := f.read(_READ_CHUNK):
                while chunk:
                    yield d.decompress(chunk)
                    # Concatenated gzip members (e.g. `cat a.gz b.gz`): start a new decompressor.
                    chunk = d.unused_data if d.eof else b""
                    if chunk:
                        d = zlib.decompressobj(wbits=31)
            if not d.eof:
                raise IngestError(f"{path}: gzip data is truncated (unexpected end of file)")
        except zlib.error as exc:
            raise IngestError(f"{path}: gzip data is corrupt ({exc})") from None


def iter_line_blocks(path: Path, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first_line_no, block)``: the content cut at line ends into blocks of about ``block_bytes``.

    Every block but possibly the last ends with a newline, so no line is split across blocks.
    """
    pending: list[bytes] = []
    size = 0
    line_no = 1
    for chunk in iter_bytes(path):
        pending.append(chunk)
        size += len(chunk)
        if size < block_bytes:
            continue
        data = b"".join(pending)
        cut = data.rfind(b"\n") + 1
        if cut == 0:  # one huge line so far: keep reading
            pending, size = [data], len(data)
            continue
        block, rest = data[:cut], data[cut:]
        yield line_no, block
        line_no += block.count(b"\n")
        pending, size = ([rest] if rest else []), len(rest)
    if size:
        yield line_no, b"".join(pending)


_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 13, 32]] = True


def lines_table(block: bytes, first_line_no: int) -> pa.Table:
    """Split a block into lines, as an Arrow table DuckDB reads without copying.

    Columns: ``line_no`` (1-based, physical), ``line`` (text, *with* its trailing newline:
    Arrow offsets are contiguous, and JSON ignores surrounding whitespace, so stripping it
    in SQL would only cost time), ``first_byte`` (of the line), ``blank`` (only whitespace)
    and ``bad_utf8`` (the line as escaped text when it is not valid UTF-8, else null).

    Invalid UTF-8 is found here (Arrow strings must be valid UTF-8): such a line's bytes are
    blanked in a copy of the block and its original kept, escaped, in ``bad_utf8``.
    """
    if not block:
        block = b"\n"  # one blank line: keeps the shapes below simple
    buf = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if len(ends) == 0 or ends[-1] != len(block):
        ends = np.append(ends, len(block))
    n = len(ends)
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends
    starts = offsets[:-1]

    bad: dict[int, str] = {}
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        block, bad = _blank_invalid_utf8_lines(block, offsets)
        buf = np.frombuffer(block, dtype=np.uint8)

    # Blank = only whitespace. A line starting with a non-whitespace byte is not blank, so
    # only the (rare) lines starting with whitespace are looked at one by one.
    first_byte = buf[np.minimum(starts, len(buf) - 1)]
    maybe_blank = np.flatnonzero(_WHITESPACE[first_byte] | (ends == starts))
    blank = np.zeros(n, dtype=bool)
    for i in maybe_blank.tolist():
        blank[i] = i not in bad and not block[offsets[i]:offsets[i + 1]].strip()

    line = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(block))
    if bad:
        bad_col = pa.array([bad.get(i) for i in range(n)], type=pa.string())
    else:
        bad_col = pa.nulls(n, type=pa.string())
    return pa.table({
        "line_no": pa.array(np.arange(first_line_no, first_line_no + n, dtype=np.int64)),
        "line": line,
        "first_byte": pa.array(first_byte),
        "blank": pa.array(blank),
        "bad_utf8": bad_col,
    })


def _blank_invalid_utf8_lines(block: bytes, offsets: np.ndarray) -> tuple[bytes, dict[int, str]]:
    """Replace each line holding invalid UTF-8 by spaces; return the new block and {index: escaped line}.

    Decodes in windows of about 1 MiB aligned to line starts, so the cost stays linear in the
    block size even when many lines are bad.
    """
    data = bytearray(block)
    view = memoryview(data)
    bad: dict[int, str] = {}
    n = len(offsets) - 1
    lo = 0
    while lo < n:
        hi = max(lo + 1, min(n, int(np.searchsorted(offsets, offsets[lo] + (1 << 20), side="left"))))
        try:
            codecs.utf_8_decode(view[offsets[lo]:offsets[hi]], "strict", True)
        except UnicodeDecodeError:
            # Something in this window is bad: check its lines one by one.
            for i in range(lo, hi):
                a, b = int(offsets[i]), int(offsets[i + 1])
                try:
                    codecs.utf_8_decode(view[a:b], "strict", True)
                except UnicodeDecodeError:
                    bad[i] = bytes(data[a:b]).rstrip(b"\r\n").decode("utf-8", errors="backslashreplace")
                    data[a:b] = b" " * (b - a - 1) + (b"\n" if data[b - 1] == 10 else b" ")
        lo = hi
    view.release()
    return bytes(data), bad


def read_all_text(path: Path) -> bytes:
    """The whole (decompressed) content, for formats that are one JSON document per file."""
    return b"".join(iter_bytes(path))


@dataclass(frozen=True)
class CsvRecords:
    """A CSV loaded into a temp table: one VARCHAR column per header field plus ``__source_row``.

    ``malformed`` is a temp table ``(source_row, detail, payload)`` of rows DuckDB could not split.
    """

    table: str
    malformed: str
    columns: tuple[str, ...]
    delimiter: str = ","

    def payload_sql(self, columns: tuple[str, ...] | None = None) -> str:
        """SQL rebuilding a record's original CSV line from its values (DuckDB keeps no raw line).

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


def load_csv_records(con: duckdb.DuckDBPyConnection, path: Path, prefix: str) -> CsvRecords:
    """Read a CSV (plain or gzip) with DuckDB into temp tables; bad rows are kept, not fatal.

    ``__source_row`` is the record's line number in the file (header = line 1); it equals the
    physical line unless a quoted value spans several lines.

    Raises
    ------
    IngestError
        The file has no header / cannot be read as CSV at all.
    """
    table, rejects, scans = f"{prefix}_csv", f"{prefix}_csv_rejects", f"{prefix}_csv_scans"
    malformed = f"{prefix}_csv_malformed"
    compression = "gzip" if is_gzip(path) else "none"
    if not any(chunk.strip() for chunk in _first_chunk(path)):
        raise IngestError(f"{path}: file is empty (a CSV needs at least a header line)")
    try:
        # row_number() over () follows the file order: DuckDB keeps insertion order for
        # CSV scans (preserve_insertion_order, the default), which the tests check.
        con.execute(f"""
            create temp table {table} as
            select row_number() over () as __record, *
            from read_csv({lit(str(path))}, all_varchar = true, header = true, compression = {lit(compression)},
                          ignore_errors = true, store_rejects = true,
                          rejects_table = {lit(rejects)}, rejects_scan = {lit(scans)},
                          max_line_size = 16777216)""")
    except duckdb.Error as exc:
        raise IngestError(f"{path}: cannot be read as CSV: {_first_line(exc)}") from None
    columns = tuple(r[0] for r in con.execute(f"describe {table}").fetchall() if r[0] != "__record")
    sniffed = con.execute(f"select Delimiter from sniff_csv({lit(str(path))}, header = true, "
                          f"compression = {lit(compression)}, ignore_errors = true)").fetchone()
    con.execute(f"""
        create temp table {malformed} as
        select line as source_row,
               string_agg(error_type || coalesce(': ' || error_message, ''), '; ') as detail,
               first(coalesce(csv_line, '')) as payload
        from {rejects} group by line""")
    # Map the n-th good record to its line: after j rejected lines, good record r sits on line
    # r + 1 (header) + j. The ASOF join finds, per good record, how many rejected lines precede it.
    con.execute(f"""
        create or replace temp table {table} as
        with r as (select source_row, row_number() over (order by source_row) as j from {malformed}),
             g as (select source_row - 1 - j as good_before, max(j) as j from r group by 1)
        select t.__record + 1 + coalesce(g.j, 0) as __source_row, t.* exclude (__record)
        from {table} t asof left join g on t.__record > g.good_before""")
    con.execute(f"drop table if exists {rejects}; drop table if exists {scans}")
    return CsvRecords(table=table, malformed=malformed, columns=columns,
                      delimiter=sniffed[0] if sniffed and sniffed[0] else ",")


def _first_chunk(path: Path) -> Iterator[bytes]:
    """The first non-empty chunk of content (a gzip header alone decompresses to nothing)."""
    for chunk in iter_bytes(path):
        if chunk:
            yield chunk
            return


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def temp_prefix() -> str:
    """A unique prefix for this ingest's temp tables (several ingests may share a connection)."""
    return "ingest_" + uuid.uuid4().hex[:12]


__all__ = ["CsvRecords", "DEFAULT_BLOCK_BYTES", "iter_line_blocks", "lines_table", "load_csv_records",
           "read_all_text", "sha256_of", "temp_prefix"]
