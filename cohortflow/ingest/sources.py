"""Reading source files: fingerprints, (gzipped) content, lines as Arrow.

Lines are cut in Python with numpy (exact 1-based line numbers, any byte content) and
handed to DuckDB as an Arrow table without copying, so that all parsing and checking
happens vectorised in SQL. CSV records are built on these lines by
:mod:`cohortflow.ingest.csv_reader`.
"""

from __future__ import annotations

import codecs
import hashlib
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from cohortflow.ingest.summary import IngestError

GZIP_MAGIC = b"\x1f\x8b"
#: Dropped when it starts the (decompressed) content; see :func:`iter_bytes`.
UTF8_BOM = b"\xef\xbb\xbf"
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

    A UTF-8 byte-order mark at the very start of the content is dropped (Excel and some
    Windows tools write one): it is not part of the first line, field name or JSON value.

    Raises
    ------
    IngestError
        Corrupt or truncated gzip data; the message names the file.
    """
    head: bytes | None = b""
    for chunk in _iter_raw_bytes(path):
        if head is None:
            yield chunk
            continue
        head += chunk
        if len(head) < len(UTF8_BOM) and UTF8_BOM.startswith(head):
            continue  # too short to tell yet (gzip may yield a few bytes at a time)
        data = head[len(UTF8_BOM):] if head.startswith(UTF8_BOM) else head
        head = None
        if data:
            yield data
    if head:  # the whole content is shorter than a BOM
        yield head


def _iter_raw_bytes(path: Path) -> Iterator[bytes]:
    """The file's bytes, decompressed when gzipped; see :func:`iter_bytes`."""
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
    block, offsets, bad = cut_lines(block)
    buf = np.frombuffer(block, dtype=np.uint8)
    n = len(offsets) - 1
    starts, ends = offsets[:-1], offsets[1:]

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


def cut_lines(block: bytes) -> tuple[bytes, np.ndarray, dict[int, str]]:
    """Cut a non-empty block into physical lines (each keeps its newline; the last may lack one).

    Parameters
    ----------
    block : bytes
        Raw content, at least one byte.

    Returns
    -------
    tuple[bytes, numpy.ndarray, dict[int, str]]
        The block with every line that is not valid UTF-8 replaced by spaces (Arrow strings must
        be valid UTF-8), the ``n + 1`` line offsets (line ``i`` is ``block[offsets[i]:offsets[i + 1]]``),
        and ``{line index: the original line as escaped text}`` for the invalid lines.
    """
    buf = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if len(ends) == 0 or ends[-1] != len(block):
        ends = np.append(ends, len(block))
    offsets = np.empty(len(ends) + 1, dtype=np.int64)
    offsets[0] = 0
    offsets[1:] = ends
    bad: dict[int, str] = {}
    try:
        block.decode("utf-8")
    except UnicodeDecodeError:
        block, bad = _blank_invalid_utf8_lines(block, offsets)
    return block, offsets, bad


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


def temp_prefix() -> str:
    """A unique prefix for this ingest's temp tables (several ingests may share a connection)."""
    return "ingest_" + uuid.uuid4().hex[:12]


__all__ = ["DEFAULT_BLOCK_BYTES", "UTF8_BOM", "cut_lines", "iter_bytes", "iter_line_blocks", "lines_table",
           "read_all_text", "sha256_of", "temp_prefix"]
