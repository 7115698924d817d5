"""Nothing a user does loses a run: overwrite, signals, a second process, changed corpora, damaged files,
full disks. Each test reproduces a way a run used to be lost or corrupted."""

import errno
import json
import os
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.rundir import RunDir
from charrnn.core.trainer import StopReason
from charrnn.lm.config import LMTrainConfig
from charrnn.lm.task import resume_config, train

RUN_FILES = ("best.pt", "last.pt", "run.json", "metrics.jsonl", "loss.svg", "corpus.bin", "corpus.json")


def snapshot(run):
    return {name: (run / name).read_bytes() for name in RUN_FILES}


@pytest.fixture
def old_run(tmp_path, corpus):
    run = tmp_path / "run"
    train(tiny_config(corpus, run, max_steps=3))
    return run


@pytest.mark.parametrize("bad", [
    dict(corpus="missing.txt"),
    dict(val_frac=0.6, test_frac=0.5),
    dict(batch_size=512, seq_len=512),  # too short for one batch: found only once the corpus is read
])
def test_overwrite_that_fails_keeps_the_old_run(tmp_path, corpus, old_run, bad):
    before = snapshot(old_run)
    with pytest.raises(CharRNNError):
        train(replace(tiny_config(corpus, old_run, max_steps=3), **bad), overwrite=True)
    assert snapshot(old_run) == before
    assert sorted(p.name for p in old_run.iterdir() if not p.name.startswith(".")) == sorted(RUN_FILES)
    assert not (old_run / ".previous-run").exists()


def test_overwrite_that_diverges_before_its_first_checkpoint_keeps_the_old_run(corpus, old_run):
    before = snapshot(old_run)
    s = train(tiny_config(corpus, old_run, cell="rnn", optimizer="sgd", momentum=0.0, lr=1e4, grad_clip=0,
                          schedule="constant", max_steps=50, eval_every=1), overwrite=True)
    assert s.stop_reason is StopReason.DIVERGED
    assert snapshot(old_run) == before


def test_overwrite_that_succeeds_replaces_the_old_run(corpus, old_run):
    train(tiny_config(corpus, old_run, max_steps=2, eval_every=1), overwrite=True)
    assert load_checkpoint(old_run / "last.pt")["train_state"]["step"] == 2
    assert not (old_run / ".previous-run").exists()


def test_a_run_killed_after_setting_the_old_one_aside_gets_it_back(corpus, old_run):
    before = snapshot(old_run)
    RunDir(old_run).set_aside(("corpus.bin", "corpus.json"))  # what a killed --overwrite left behind
    (old_run / "run.json").write_text("{}")  # the new run's first file
    with pytest.raises(CharRNNError, match="already holds a run"):
        train(tiny_config(corpus, old_run, max_steps=3))
    assert snapshot(old_run) == before


def test_a_second_process_is_refused_while_one_trains(tmp_path, corpus, old_run):
    before = snapshot(old_run)
    config = resume_config(old_run, max_steps=6)
    with RunDir(old_run).locked():  # another process's lock: flock locks are per open file, even in one process
        with pytest.raises(CharRNNError, match=f"being trained by process {os.getpid()}"):
            resume_config(old_run, max_steps=6)
        with pytest.raises(CharRNNError, match=f"being trained by process {os.getpid()}"):
            train(config, resume=True)
        with pytest.raises(CharRNNError, match="being trained by"):
            train(tiny_config(corpus, old_run, max_steps=3), overwrite=True)
    assert snapshot(old_run) == before
    assert train(resume_config(old_run, max_steps=4), resume=True).step == 4  # the lock went with its holder


@pytest.mark.parametrize("name", ["metrics.jsonl", "corpus.bin", "run.json", "last.pt"])
def test_a_corpus_with_the_name_of_a_run_file_is_never_overwritten(tmp_path, name):
    text = tmp_path / name
    text.write_text("to be or not to be, that is the question\n" * 40)
    before = text.read_bytes()
    with pytest.raises(CharRNNError, match="is a file the run writes"):
        train(tiny_config(text, tmp_path, max_steps=2), overwrite=True)
    assert text.read_bytes() == before


def test_leftover_temporary_files_are_removed_at_the_next_start(corpus, old_run):
    (old_run / ".last.pt.4242.tmp").write_bytes(b"half a checkpoint")
    train(resume_config(old_run, max_steps=4), resume=True)
    assert not list(old_run.glob("*.tmp")) and not list(old_run.glob(".*.tmp"))


def test_sigterm_while_encoding_leaves_nothing_behind(tmp_path, corpus, monkeypatch):
    import charrnn.lm.data as data

    real = data.iter_encoded

    def terminated_midway(*args, **kwargs):
        for k, block in enumerate(real(*args, **kwargs)):
            if k == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            yield block

    monkeypatch.setattr(data, "iter_encoded", terminated_midway)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, run, max_steps=3))
    assert not run.exists()  # nothing was left: no temporary corpus.bin, no half-made run directory
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_resume_from_best_when_last_is_lost(corpus, old_run):
    (old_run / "last.pt").unlink()
    assert train(resume_config(old_run, max_steps=5), resume=True).step == 5


def test_edited_run_json_is_refused_and_a_damaged_one_is_not_needed(corpus, old_run):
    saved = json.loads((old_run / "run.json").read_text())
    (old_run / "run.json").write_text(json.dumps({**saved, "batch_size": 2}))
    with pytest.raises(CharRNNError, match="batch_size: 4 in the checkpoint, 2 in run.json"):
        resume_config(old_run)
    for damaged in (b"[1, 2]", b"\xff\xfe not json", b'{"batch_size": "four"'):
        (old_run / "run.json").write_bytes(damaged)
        assert resume_config(old_run).batch_size == 4  # the checkpoint holds the settings
    assert train(resume_config(old_run, max_steps=4), resume=True).step == 4


def test_damaged_metrics_lines_are_skipped(corpus, old_run):
    with open(old_run / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n{"kind": "eval", "step": 2}\n\xff\xfe\n{"kind": "train", "step": "x", "loss": 1}\n')
    train(resume_config(old_run, max_steps=5), resume=True)
    records = RunDir(old_run).read_metrics()
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5]
    assert (old_run / "loss.svg").read_text().count("<polyline") == 2


def test_a_directory_where_a_run_file_belongs_is_one_clear_error(corpus, old_run):
    (old_run / "metrics.jsonl").unlink()
    (old_run / "metrics.jsonl").mkdir()
    with pytest.raises(CharRNNError, match="is not a file"):
        train(resume_config(old_run, max_steps=5), resume=True)


def test_out_that_is_a_file_or_under_one(tmp_path, corpus):
    (tmp_path / "f").write_text("x")
    with pytest.raises(CharRNNError, match="is a file, not a directory"):
        train(tiny_config(corpus, tmp_path / "f"))
    with pytest.raises(CharRNNError, match="lies under"):
        train(tiny_config(corpus, tmp_path / "f" / "run"))


def test_disk_full_while_checkpointing_says_the_old_checkpoint_is_intact(corpus, old_run, monkeypatch):
    before = snapshot(old_run)

    def no_space(obj, f):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(CharRNNError, match="No space left on device.*checkpoints already in .* are intact"):
        train(resume_config(old_run, max_steps=6), resume=True)
    assert (old_run / "last.pt").read_bytes() == before["last.pt"]
    assert not list(old_run.glob(".*.tmp"))


@pytest.mark.parametrize("change", ["edit", "grow", "delete"])
def test_resume_after_the_corpus_changed(corpus, old_run, change):
    original = corpus.read_text()
    if change == "delete":
        corpus.unlink()  # or a run directory copied to another machine: the run's own encoded copy is used
        assert train(resume_config(old_run, max_steps=5), resume=True).step == 5
        return
    corpus.write_text(original.replace("Citizen", "Citizens") if change == "edit" else original * 2)
    with pytest.raises(CharRNNError, match="has changed since this run started.*--use-cached-corpus"):
        train(resume_config(old_run, max_steps=5), resume=True)
    s = train(resume_config(old_run, max_steps=5, use_cached_corpus=True), resume=True)
    assert s.step == 5 and s.epoch == pytest.approx(5 / 25, abs=0.01)  # still the original's 25 steps per epoch
    # The run now lives on its encoded copy: a later resume needs no flag, and run.json says so.
    assert train(resume_config(old_run, max_steps=6), resume=True).step == 6
    assert json.loads((old_run / "run.json").read_text())["use_cached_corpus"] is True


def test_a_touched_but_unchanged_corpus_resumes(corpus, old_run):
    os.utime(corpus, (1, 1))
    assert train(resume_config(old_run, max_steps=5), resume=True).step == 5


@pytest.mark.parametrize("bad, message", [
    (dict(seed=2**64), "--seed"), (dict(seed=-1), "--seed"),
    (dict(patience=2, val_frac=0.0), "--patience needs a validation split"),
    (dict(val_frac=0.5, test_frac=0.5), "--val-frac 0.5 and --test-frac 0.5"),
])
def test_settings_refused_before_anything_is_written(tmp_path, bad, message):
    with pytest.raises(CharRNNError, match=message):
        LMTrainConfig(out=str(tmp_path / "run"), **bad)
    assert not (tmp_path / "run").exists()


@pytest.fixture
def small_mount(tmp_path):
    """A 400 kB tmpfs of our own (root only): a real full disk, and one that can be remounted read-only.
    As root, `chmod a-w` does not stop writes, so a read-only mount is the honest test."""
    import subprocess

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and permission to mount a tmpfs")
    yield mnt
    subprocess.run(["umount", "--lazy", str(mnt)], capture_output=True)  # even while a failed test holds a file


def test_a_read_only_run_directory_is_one_clear_error(corpus, small_mount):
    import subprocess

    run = small_mount / "run"
    train(tiny_config(corpus, run, max_steps=2))
    before = snapshot(run)
    subprocess.run(["mount", "-o", "remount,ro", str(small_mount)], check=True)
    with pytest.raises(CharRNNError, match="Read-only file system"):
        train(resume_config(run, max_steps=4), resume=True)
    with pytest.raises(CharRNNError, match="Read-only file system"):
        train(tiny_config(corpus, small_mount / "new", max_steps=2))
    assert snapshot(run) == before


def test_a_full_disk_keeps_the_last_checkpoint(corpus, small_mount):
    run = small_mount / "run"
    train(tiny_config(corpus, run, max_steps=2))
    before = snapshot(run)
    (small_mount / "ballast").write_bytes(b"\0" * (400_000 - sum(len(b) for b in before.values()) - 30_000))
    with pytest.raises(CharRNNError, match="No space left on device.*are intact"):
        train(resume_config(run, max_steps=100, eval_every=1), resume=True)
    assert (run / "last.pt").read_bytes() == before["last.pt"]
    assert not list(run.glob(".*.tmp"))


# ----- damaged checkpoints, failed resumes and other tasks' runs (issue 20) -------------------------------------

def rewrite(path, change) -> None:
    """Change a checkpoint's dict, keeping its checksums true (so that what is tested is the change itself)."""
    from charrnn.core.checkpoint import with_checksums

    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(with_checksums(ckpt), path)


def test_a_damaged_last_pt_says_that_best_pt_is_intact_and_how_to_resume_from_it(corpus, old_run):
    (old_run / "last.pt").write_bytes((old_run / "last.pt").read_bytes()[:5000])
    before = snapshot(old_run)
    with pytest.raises(CharRNNError, match=r"last.pt' is truncated or damaged .*; best.pt \(step 3\) is intact: resume "
                                           r"from it with `mv .*last.pt .*last.pt.damaged && charrnn train --resume"):
        resume_config(old_run, max_steps=5)
    with pytest.raises(CharRNNError, match="best.pt .* is intact"):
        train(tiny_config(corpus, old_run, max_steps=5), resume=True)
    assert snapshot(old_run) == before
    os.replace(old_run / "last.pt", old_run / "last.pt.damaged")  # what the message says to do
    assert train(resume_config(old_run, max_steps=5), resume=True).step == 5
    (old_run / "best.pt").write_text("oops")
    (old_run / "last.pt").write_bytes(b"")
    with pytest.raises(CharRNNError, match="last.pt' is empty.*; best.pt is not a charrnn checkpoint: it is a text "
                                           "file too: put back a good copy of last.pt, or start a new run"):
        resume_config(old_run)


def test_a_flipped_bit_in_the_training_state_is_found_before_resuming(corpus, old_run):
    import zipfile

    from test_core_checkpoint import flip_a_weight_byte

    first_of_train_state = len(load_checkpoint(old_run / "last.pt")["model_state"])
    with zipfile.ZipFile(old_run / "last.pt") as z:  # the largest tensor of the optimizer's state
        sizes = {int(i.filename.rsplit("/", 1)[1]): i.file_size for i in z.infolist() if "/data/" in i.filename}
    flip_a_weight_byte(old_run / "last.pt", max((k for k in sizes if k >= first_of_train_state), key=sizes.get))
    before = snapshot(old_run)
    assert load_checkpoint(old_run / "last.pt")  # the weights are intact: sampling still works
    with pytest.raises(CharRNNError, match=r"last.pt' is damaged \(the checksum of its training state does not "
                                           r"match\); best.pt \(step 3\) is intact"):
        train(resume_config(old_run, max_steps=5), resume=True)
    assert snapshot(old_run) == before


def _hidden_wrong(ckpt):
    ckpt["train_state"]["task"]["hidden_state"] = [torch.zeros(1, 2, 3)] * 2


def _optimizer_of_another_model(ckpt):
    ckpt["train_state"]["optimizer"]["param_groups"][0]["params"].append(99)


@pytest.mark.parametrize("change, message", [
    (lambda c: c["train_state"].update(step="x"), "training state's step is 'x', not a whole number"),
    (lambda c: c["train_state"].update(step=-1), "training state's step is -1"),
    (lambda c: c["train_state"].update(epoch=7), "at epoch 7 after only 3 steps"),
    (lambda c: c["train_state"].pop("optimizer"), "training state has no optimizer"),
    (lambda c: c["train_state"].pop("rng"), "training state has no rng"),
    (lambda c: c["train_state"].pop("task"), "training state has no task"),
    (lambda c: c["train_state"].update(rng="x"), "rng is 'x', not a list of random states"),
    (lambda c: c.update(train_state=None), "has no training state to resume from"),
    (_hidden_wrong, "does not fit the model .*hidden state"),
    (_optimizer_of_another_model, "does not fit the model"),
    (lambda c: c["meta"]["train_config"].update(batch_size="4"), "run settings it holds are wrong .*batch_size"),
    (lambda c: c["meta"]["train_config"].update(hidden_size=48), "weights do not match"),
])
def test_a_damaged_training_state_is_refused_before_anything_is_written(corpus, old_run, change, message):
    rewrite(old_run / "last.pt", change)
    (old_run / "run.json").unlink()  # the checkpoint's settings decide (run.json is only their copy)
    files = sorted(p.name for p in old_run.iterdir())
    before = {name: (old_run / name).read_bytes() for name in files}
    with pytest.raises(CharRNNError, match=message) as e:
        train(resume_config(old_run, max_steps=5), resume=True)
    assert "\n" not in str(e.value) and "best.pt (step 3) is intact" in str(e.value)
    # No run.json written, nothing else either (but the lock of a refusal that came after taking it).
    assert sorted(p.name for p in old_run.iterdir() if p.name != ".lock") == files
    assert {name: (old_run / name).read_bytes() for name in files} == before


def test_a_failed_resume_leaves_run_json_and_metrics_untouched(corpus, old_run):
    before = snapshot(old_run)
    with pytest.raises(CharRNNError, match="already finished"):
        train(resume_config(old_run, max_steps=2), resume=True)  # a run at step 3 asked to stop at 2
    with pytest.raises(CharRNNError, match="--batch-size cannot change when resuming"):
        resume_config(old_run, batch_size=2)
    rewrite(old_run / "last.pt", _optimizer_of_another_model)
    before["last.pt"] = (old_run / "last.pt").read_bytes()
    with pytest.raises(CharRNNError, match="does not fit the model"):
        train(resume_config(old_run, max_steps=5), resume=True)
    assert snapshot(old_run) == before


# One run of each task (the release fixtures: a run directory, and checkpoints that become one), and the command
# that trains each. Every pairing of a command with another task's run is refused with nothing in it changed.
FIXTURES = Path(__file__).parent / "fixtures" / "release-0.1.0"
TRAIN = {"lm": ["train"], "caption": ["caption", "train"], "ctc": ["ctc", "train"]}


def listing(run) -> dict:
    """Every file in a run directory (hidden ones too), with its size, mtime and content."""
    return {str(p.relative_to(run)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(run.rglob("*"))}


def task_run(tmp_path, task):
    run = tmp_path / f"{task}-run"
    if task == "lm":
        shutil.copytree(FIXTURES / "lm", run)
    else:
        run.mkdir()
        shutil.copy(FIXTURES / f"{task}.pt", run / "last.pt")
    return run


@pytest.mark.parametrize("command, owner", [(c, o) for c in TRAIN for o in TRAIN if c != o])
def test_resuming_another_tasks_run_changes_nothing_in_it(tmp_path, monkeypatch, command, owner):
    from typer.testing import CliRunner

    from charrnn.cli import app
    from charrnn.tasks import TASKS, run_config_class

    monkeypatch.chdir(tmp_path)  # where ctc would render its default lines
    run = task_run(tmp_path, owner)
    before = listing(run)
    r = CliRunner().invoke(app, [*TRAIN[command], "--resume", str(run), "--max-steps", "5"])
    assert r.exit_code == 2, r.output
    assert f"continue it with `{TASKS[owner].train_command} --resume {run}`" in r.stderr
    with pytest.raises(CharRNNError, match=f"holds {TASKS[owner].what}, not {TASKS[command].what}"):
        module = __import__(f"charrnn.{command}.task", fromlist=["train"])
        module.train(run_config_class(command)(out=str(run), max_steps=5), resume=True)
    assert listing(run) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [run.name]  # nothing rendered or cached elsewhere
