"""Uncompressed `.npz` files written a block of rows at a time, and read back memory-mapped.

`numpy.savez` needs every array in memory at once, and `zipfile` writes one member at a time, while a
trace produces a block of rows of *every* array at each step. But every array's shape and dtype are known
before the first row is computed, so `write_npz` lays the whole archive out in advance and writes each
block of rows straight to its place in the file: one pass, no temporary copy, memory bounded by a block.
The result is an ordinary zip64 archive of `.npy` members stored uncompressed, which `numpy.load` and
`unzip` read like any `.npz`. Because nothing is compressed, `NpzArchive` maps a member's data in place
and touches only the rows asked for; compressed members (`numpy.savez_compressed`) are decompressed as
far as needed instead.

Zip layout: PKWARE APPNOTE.TXT 6.3, sections 4.3 (records) and 4.5.3 (zip64 extra field).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from charrnn.core.files import atomic_write

LOCAL = struct.Struct("<4s5H3L2H")  # signature, version, flags, method, time, date, crc, sizes, name/extra lengths
CENTRAL = struct.Struct("<4s6H3L5H2L")
ZIP64_END = struct.Struct("<4sQ2H2L4Q")
ZIP64_LOCATOR = struct.Struct("<4sLQL")
END = struct.Struct("<4s4H2LH")
ZIP64_VERSION = 45  # "version needed to extract" for zip64 archives
UNIX_ZIP64 = (3 << 8) | ZIP64_VERSION  # made by: Unix, so unzip gives the files ordinary permissions
FILE_MODE = 0o644 << 16
DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01 00:00: a fixed time, so equal arrays give equal files
ALIGN = 64  # data of every member starts on a 64-byte boundary of the file, as .npy headers pad to
ALIGNMENT_EXTRA = 0xD935  # the extra-field id Android's zipalign uses for exactly this padding
SATURATED = 0xFFFFFFFF  # "see the zip64 extra field"


class NpzFormatError(ValueError):
    """The file is not a well-formed .npz of plain arrays; the message (one line) says what is wrong."""


@dataclass
class _Member:
    """One array of the archive: where it goes and how far it has been written."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int  # of its local file header
    padding: int  # zero bytes in the local extra field that align the data (memory maps, SIMD loads)
    header: bytes  # the .npy header
    rows_written: int = 0
    crc: int = 0

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return self.dtype.itemsize * math.prod(self.shape[1:])

    @property
    def size(self) -> int:  # the member's bytes: .npy header and data
        return len(self.header) + self.rows * self.row_bytes

    @property
    def filename(self) -> bytes:
        return f"{self.name}.npy".encode("ascii")

    @property
    def data_offset(self) -> int:  # of the array's first byte in the file
        return self.offset + LOCAL.size + len(self.filename) + len(self.local_extra()) + len(self.header)

    def local_extra(self) -> bytes:
        return struct.pack("<2H2Q", 1, 16, self.size, self.size) + _alignment_field(self.padding)

    def local_header(self) -> bytes:
        extra = self.local_extra()
        return LOCAL.pack(b"PK\x03\x04", ZIP64_VERSION, 0, zipfile.ZIP_STORED, 0, DOS_DATE, self.crc, SATURATED,
                          SATURATED, len(self.filename), len(extra)) + self.filename + extra

    def central_record(self) -> bytes:
        # The zip64 field here also holds the offset, 8 bytes more: 8 bytes less padding keep the two extra
        # fields of equal length, as zipinfo expects when it estimates where each member ends.
        extra = struct.pack("<2H3Q", 1, 24, self.size, self.size, self.offset) + _alignment_field(self.padding - 8)
        return CENTRAL.pack(b"PK\x01\x02", UNIX_ZIP64, ZIP64_VERSION, 0, zipfile.ZIP_STORED, 0, DOS_DATE, self.crc,
                            SATURATED, SATURATED, len(self.filename), len(extra), 0, 0, 0, FILE_MODE, SATURATED
                            ) + self.filename + extra


def _alignment_field(padding: int) -> bytes:
    return struct.pack("<3H", ALIGNMENT_EXTRA, 2 + padding, ALIGN) + bytes(padding)


def _npy_header(shape: tuple[int, ...], dtype: np.dtype) -> bytes:
    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, {"descr": npy.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _plan(arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> tuple[list[_Member], int]:
    """Every member's place in the file, and where the central directory starts."""
    members, offset = [], 0
    for name, (shape, dtype) in arrays.items():
        header = _npy_header(tuple(shape), np.dtype(dtype))
        # The checksum covers the member's bytes, .npy header included; the rows continue it as they arrive.
        member = _Member(name, tuple(shape), np.dtype(dtype), offset, 8, header, crc=zlib.crc32(header))
        member.padding += -member.data_offset % ALIGN  # at least 8: see `central_record`
        members.append(member)
        offset = member.data_offset + member.rows * member.row_bytes
    return members, offset


class NpzWriter:
    """Fills the members `write_npz` laid out, each one row block after another."""

    def __init__(self, f, arrays: dict[str, tuple[tuple[int, ...], np.dtype]]):
        self._f = f
        members, self._directory = _plan(arrays)
        self._members = {m.name: m for m in members}
        for m in members:
            f.seek(m.offset)
            f.write(m.local_header() + m.header)

    def write(self, name: str, rows: np.ndarray) -> None:
        """Append `rows` (the next rows of array `name`, or the whole of a 0-d array), cast to its dtype."""
        m = self._members[name]
        rows = np.ascontiguousarray(rows, dtype=m.dtype)
        count = rows.shape[0] if m.shape else 1
        if rows.shape[1:] != m.shape[1:] or m.rows_written + count > m.rows:
            raise ValueError(f"{name}: rows of shape {rows.shape} do not fit {m.shape} after {m.rows_written} rows")
        data = rows.tobytes()
        self._f.seek(m.data_offset + m.rows_written * m.row_bytes)
        self._f.write(data)
        m.crc = zlib.crc32(data, m.crc)
        m.rows_written += count

    def finish(self) -> None:
        """Check every array is complete, then write the checksums and the central directory."""
        incomplete = [f"{m.name} ({m.rows_written} of {m.rows} rows)" for m in self._members.values()
                      if m.rows_written != m.rows]
        if incomplete:
            raise ValueError(f"arrays not completely written: {', '.join(incomplete)}")
        for m in self._members.values():
            self._f.seek(m.offset)
            self._f.write(m.local_header())
        self._f.seek(self._directory)
        directory = b"".join(m.central_record() for m in self._members.values())
        self._f.write(directory + _end_records(len(self._members), self._directory, len(directory)))


def _end_records(count: int, directory_offset: int, directory_size: int) -> bytes:
    """The zip64 end of central directory record, its locator, and the classic end record pointing to them."""
    end64 = directory_offset + directory_size
    # The record's size field counts the bytes after itself: the whole record less 12 (APPNOTE 4.3.14.1).
    return (ZIP64_END.pack(b"PK\x06\x06", ZIP64_END.size - 12, UNIX_ZIP64, ZIP64_VERSION, 0, 0, count, count,
                           directory_size, directory_offset)
            + ZIP64_LOCATOR.pack(b"PK\x06\x07", 0, end64, 1)
            + END.pack(b"PK\x05\x06", 0, 0, count, count, SATURATED, SATURATED, 0))


@contextlib.contextmanager
def write_npz(path: str | os.PathLike, arrays: dict[str, tuple[tuple[int, ...], np.dtype]]) -> Iterator[NpzWriter]:
    """An uncompressed .npz at `path` holding `arrays` ({name: (shape, dtype)}), filled through the writer.

    The file appears at `path` only once every array is complete: an error or an interruption leaves the
    previous file, if any, untouched (see `common.atomic_write`).
    """
    with atomic_write(path, "wb") as f:
        writer = NpzWriter(f, arrays)
        yield writer
        writer.finish()


# ----- reading ---------------------------------------------------------------------------------------

# What zipfile, zlib and numpy raise on damaged bytes (an unsupported method or a "password" among them).
_READ_ERRORS = (OSError, EOFError, ValueError, OverflowError, RuntimeError, NotImplementedError, zipfile.BadZipFile,
                zlib.error, struct.error)


class NpzArchive:
    """The arrays of an .npz file, each read only when and as far as asked. Never unpickles anything."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except _READ_ERRORS:
            raise NpzFormatError(_what_instead_of_a_zip(self.path)) from None
        self._size = self.path.stat().st_size

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    def header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of an array, read from its .npy header alone."""
        return self._header(name)[:2]

    def read(self, name: str) -> np.ndarray:
        """The whole array, in memory (for the small ones)."""
        return self.rows(name, None, mapped=False)

    def rows(self, name: str, count: int | None = None, *, mapped: bool = True) -> np.ndarray:
        """The first `count` rows (all if None): memory-mapped, read-only, where the member is stored as is."""
        shape, dtype, header_size = self._header(name)
        rows = shape[0] if shape else 1
        count = rows if count is None or not shape else min(count, rows)
        info = self._zip.getinfo(f"{name}.npy")
        try:
            if mapped and shape and info.compress_type == zipfile.ZIP_STORED and count * math.prod(shape[1:]) > 0:
                offset = self._data_offset(info) + header_size
                return np.memmap(self.path, dtype=dtype, mode="r", offset=offset, shape=(count, *shape[1:]))
            return self._stream_rows(info, shape, dtype, count)
        except _READ_ERRORS as err:
            raise NpzFormatError(f"member {name!r}: {_one_line(err)}") from None

    def _header(self, name: str) -> tuple[tuple[int, ...], np.dtype, int]:
        """Shape, dtype and .npy header length of a member, checked against the member's size."""
        try:
            info = self._zip.getinfo(f"{name}.npy")
        except KeyError:
            raise NpzFormatError(f"array {name!r} is missing") from None
        try:
            with self._zip.open(info) as fp:
                shape, dtype = _read_npy_header(fp)
                header_size = fp.tell()
        except _READ_ERRORS as err:
            raise NpzFormatError(f"member {name!r}: {_one_line(err)}") from None
        data_size = dtype.itemsize * math.prod(shape)
        if info.file_size != header_size + data_size:
            raise NpzFormatError(f"member {name!r} holds {info.file_size - header_size} bytes of data, but a {dtype} "
                                 f"array of shape {shape} needs {data_size}")
        return shape, dtype, header_size

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where a stored member's bytes start in the file: after its local header, whose fields say how long it is."""
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            fields = LOCAL.unpack(f.read(LOCAL.size))
        if fields[0] != b"PK\x03\x04":
            raise zipfile.BadZipFile("bad local file header")
        start = info.header_offset + LOCAL.size + fields[-2] + fields[-1]
        if start + info.file_size > self._size:
            raise EOFError("the file is cut short")
        return start

    def _stream_rows(self, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype, count: int) -> np.ndarray:
        with self._zip.open(info) as fp:
            _read_npy_header(fp)
            size = count * dtype.itemsize * math.prod(shape[1:])
            data = fp.read(size)
        if len(data) != size:
            raise EOFError("the file is cut short")
        return np.frombuffer(data, dtype=dtype).reshape((count, *shape[1:]) if shape else ())  # read-only, as a map is


def _what_instead_of_a_zip(path: Path) -> str:
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":
            return "a zip archive cut short or damaged: its directory of members is missing"
    return "not a zip archive (an .npz is one)"


def _read_npy_header(fp) -> tuple[tuple[int, ...], np.dtype]:
    version = npy.read_magic(fp)
    if version == (1, 0):
        shape, fortran_order, dtype = npy.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, fortran_order, dtype = npy.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        # np.load would unpickle these, which can run any code; plain arrays never need it.
        raise ValueError("it holds Python objects (pickles), which are never loaded")
    if fortran_order and len(shape) > 1:
        raise ValueError("it is stored in Fortran order; only C-ordered arrays are read")
    return tuple(shape), dtype


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
