import importlib
import os
import shutil
from pathlib import Path

import pytest

from charrnn.core.errors import CharRNNError
from charrnn.core.files import check_distinct, check_output, replace_directory
from charrnn.core.rundir import RUN_FILES, run_keeping
from charrnn.tasks import TASKS

FIXTURE_RUN = Path(__file__).parent / "fixtures" / "release-0.1.0" / "lm"


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE_RUN, run)
    return run


def refused(needle, path, **kw):
    with pytest.raises(CharRNNError, match=needle) as e:
        check_output(path, option="--out", **kw)
    assert "\n" not in str(e.value)


def test_an_output_may_not_be_an_input(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("abc")
    refused("one of this command's inputs", text, inputs=[text])
    refused("one of this command's inputs", tmp_path / "." / "corpus.txt", inputs=[text])
    (tmp_path / "link.txt").symlink_to(text)
    refused("one of this command's inputs", tmp_path / "link.txt", inputs=[text])  # the same file
    os.link(text, tmp_path / "hard.txt")
    refused("one of this command's inputs", tmp_path / "hard.txt", inputs=[text])
    assert check_output(tmp_path / "new.html", option="--out", inputs=[text]) == tmp_path / "new.html"


def test_an_output_may_not_be_a_file_a_run_keeps(run_dir):
    for name in ("run.json", "metrics.jsonl", "loss.svg", ".lock", "corpus.bin", "corpus.json"):
        refused(f"the {name} that the run in", run_dir / name)
    refused(r"\.pt files are checkpoints", run_dir / "best.pt")
    refused(r"\.pt files are checkpoints", run_dir / "last.pt")  # one the run will write
    refused(r"\.pt files are checkpoints", "model.pt")
    check_output(run_dir / "cells.html", option="--out")  # a file of one's own beside the run is fine
    check_output(run_dir.parent / "run.json", option="--out")  # outside a run, run.json is any file


def test_an_output_file_may_not_be_a_directory_or_lie_under_a_file(tmp_path):
    refused("is a directory", tmp_path)
    (tmp_path / "f.txt").write_text("x")
    refused("lies under .*f.txt.*which is a file", tmp_path / "f.txt" / "out.html")


def test_an_output_directory(tmp_path, run_dir):
    text = tmp_path / "in" / "t.txt"
    text.parent.mkdir()
    text.write_text("x")
    check_output(tmp_path / "new", option="--out", directory=True)
    refused("is a file", text, directory=True)
    refused("is a run directory", run_dir, directory=True)
    refused("holds .*t.txt", text.parent, directory=True, inputs=[text])


def test_two_outputs_may_not_be_one_file(tmp_path):
    check_distinct({"--html": tmp_path / "a.html", "--plot": tmp_path / "a.svg", "--x": None})
    with pytest.raises(CharRNNError, match="--html and --plot both name"):
        check_distinct({"--html": tmp_path / "a", "--plot": tmp_path / "." / "a"})


def test_the_task_table_lists_every_task_cache(tmp_path):
    for row in TASKS.values():
        cache = getattr(importlib.import_module(f"{row.package}.task"), "CACHE_FILES", ())
        assert row.cache_files == tuple(cache), row.name
    assert run_keeping(tmp_path / "run.json") is None  # no run there
    (tmp_path / "run.json").write_text("{}")
    assert all(run_keeping(tmp_path / name) == tmp_path.resolve() for name in RUN_FILES)


def test_replace_directory_swaps_the_whole_directory(tmp_path):
    old, new = tmp_path / "vis", tmp_path / "new"
    old.mkdir()
    (old / "states.hdf5").write_text("old")
    (old / "stale").write_text("old")
    new.mkdir()
    (new / "states.hdf5").write_text("new")
    replace_directory(new, old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vis"]  # nothing left beside it
    assert [p.name for p in old.iterdir()] == ["states.hdf5"] and (old / "states.hdf5").read_text() == "new"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    replace_directory(fresh, tmp_path / "absent")
    assert (tmp_path / "absent").is_dir() and not fresh.exists()
