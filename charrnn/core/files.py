"""Files: atomic writes (a crash mid-write never leaves a half-written file in place), the check that an
output path destroys nothing a user keeps, and the project's bundled data. Torch-free, so `charrnn --help`
starts without loading PyTorch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from charrnn.core.errors import CharRNNError


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


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Replace a file with `data` in one atomic step."""
    with atomic_write(path, "wb") as f:
        f.write(data)


# ----- output paths -----------------------------------------------------------------------------------

def check_output(path: str | os.PathLike, *, option: str, inputs: Iterable[str | os.PathLike] = (),
                 directory: bool = False) -> Path:
    """Refuse, before any work, an output path that would destroy something a user keeps; returns it.

    Refused: one of the command's `inputs` (the same path, or the same file under another name: a link); a
    file a run directory keeps (run.json, metrics.jsonl, the loss curve, a task's cache; see
    `charrnn.core.rundir.run_keeping`); a `.pt` name (those are checkpoints, which only training writes); a
    path under a file. A file output (the default) may not be an existing directory; a `directory` output
    may not be an existing file, a run directory, or a directory that holds an input.
    """
    from charrnn.core.rundir import RunDir, run_keeping

    p = Path(path)
    shown = f"{option} {str(p)!r}"
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise CharRNNError(f"{shown} lies under {str(parent)!r}, which is a file; choose another {option}")
    if p.suffix == ".pt":
        raise CharRNNError(f"{shown}: .pt files are checkpoints, which only training writes; choose another name")
    for source in inputs:
        if _same_file(p, Path(source)):
            raise CharRNNError(f"{shown} is one of this command's inputs, which writing it would destroy; "
                               f"choose another {option}")
    if directory:
        if p.exists() and not p.is_dir():
            raise CharRNNError(f"{shown} is a file, not a directory; choose another {option}")
        if p.is_dir() and RunDir(p).holds_run():
            raise CharRNNError(f"{shown} is a run directory, which this command would replace; choose another {option}")
        inside = [str(s) for s in inputs if _lies_in(Path(s), p)]
        if inside:
            raise CharRNNError(f"{shown} holds {inside[0]!r}, one of this command's inputs; choose another {option}")
        return p
    if p.is_dir():
        raise CharRNNError(f"{shown} is a directory; give the name of a file to write (in it, say)")
    run = run_keeping(p)
    if run is not None:
        where = p.parent if p.parent.resolve() == run else run
        raise CharRNNError(f"{shown} is the {p.name} that the run in {str(where)!r} keeps; choose another {option}")
    return p


def check_distinct(outputs: dict[str, str | os.PathLike | None]) -> None:
    """Refuse two outputs of one command ({option: path}) that are the same file: one would replace the other."""
    given = [(option, Path(p)) for option, p in outputs.items() if p is not None]
    for k, (option, p) in enumerate(given):
        for other, q in given[k + 1:]:
            if _same_file(p, q):
                raise CharRNNError(f"{option} and {other} both name {str(p)!r}; give each its own file")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def _lies_in(path: Path, directory: Path) -> bool:
    return path.resolve().is_relative_to(directory.resolve())


def replace_directory(new: str | os.PathLike, path: str | os.PathLike) -> None:
    """Put the directory `new` in the place of `path`, whole: the old one (if any) is renamed aside, the new
    one renamed in, and only then is the old one deleted. Readers of `path` see the old directory or the new
    one, never a mix; only a crash between the two renames leaves `path` missing (the old one is then beside
    it, named `.NAME.old`)."""
    new, path = Path(new), Path(path)
    aside = path.with_name(f".{path.name}.{os.getpid()}.old")
    if path.exists():
        os.replace(path, aside)
    try:
        os.replace(new, path)
    except OSError:
        if aside.exists():
            os.replace(aside, path)
        raise
    shutil.rmtree(aside, ignore_errors=True)
