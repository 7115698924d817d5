"""Files: atomic writes (a crash mid-write never leaves a half-written file in place) and the project's
bundled data. Torch-free, so `charrnn --help` starts without loading PyTorch.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside `path` for writing; on success flush it to disk and rename it over `path`.

    A crash or an exception mid-write leaves the previous `path` untouched and no temporary file behind:
    rename is atomic on POSIX and Windows, and fsync first makes sure the new bytes reach the disk before
    the old ones are replaced.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def bundled(relative: str) -> Path:
    """A file shipped in the project's `corpora/`: found from the project root, or beside the installed
    package's source tree (an editable install run from elsewhere)."""
    here = Path(relative)
    if here.exists():
        return here
    beside = Path(__file__).resolve().parents[2] / relative
    return beside if beside.exists() else here


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Replace a text file (UTF-8) in one atomic step."""
    with atomic_write(path, "w") as f:
        f.write(text)
