"""`charrnn bench --task ctc`: both loops run and report positive rates and a ratio, the plain loop reads exactly the
batches and targets the real task trains on, and bad values are one-line errors. No figure is asserted (no timed
tests)."""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import charrnn.ctc.task as ctc_task
from charrnn.cli import app
from charrnn.core.errors import CharRNNError
from charrnn.ctc.bench import plain_batches, plain_task, run_bench
from charrnn.ctc.config import CTCTrainConfig
from charrnn.ctc.linegen import make_lines

runner = CliRunner()
CORPUS = Path(__file__).resolve().parents[1] / "corpora" / "tinyshakespeare.txt"
ARGS = ["bench", "--task", "ctc", "--steps", "5", "--repeats", "1", "--batch-size", "4", "--hidden-size", "16",
        "--device", "cpu", "--precision", "fp32"]


def test_json_names_the_rates_and_the_ratio():
    result = runner.invoke(app, [*ARGS, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == "ctc" and out["precision"] == "fp32" and out["train_lines"] == 32
    [row] = out["rows"]
    assert (row["cell"], row["num_layers"], row["hidden_size"], row["batch_size"]) == ("lstm", 2, 16, 4)
    assert row["train_lines_per_s"] > 0 and row["reference_train_lines_per_s"] > 0 and row["train_ratio"] > 0
    assert row["train_ratio"] == pytest.approx(row["train_lines_per_s"] / row["reference_train_lines_per_s"],
                                               abs=2e-3)
    assert len(row["runs"]) == len(row["reference_runs"]) == 1


def test_table_and_progress():
    result = runner.invoke(app, [*ARGS, "--cell", "gru", "--num-layers", "1"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "lines/s" in result.stdout and "bidirectional gru 1x16" in result.stdout
    assert "measured charrnn (repeat 1)" in result.stderr and "measured plain (repeat 1)" in result.stderr


def test_the_plain_loop_reads_the_batches_the_task_trains_on(tmp_path, monkeypatch):
    make_lines(CORPUS, tmp_path / "lines", count=14, val_count=1, val_fonts=[])
    config = CTCTrainConfig(data=str(tmp_path / "lines" / "train"), out=str(tmp_path / "run"), batch_size=4,
                            val_frac=0.0, hidden_size=8, seed=0)
    task = plain_task(config, torch.device("cpu"))
    seen = []
    monkeypatch.setattr(ctc_task, "ctc_loss", lambda log_probs, lengths, targets: seen.append((pixels[-1], targets)))
    pixels = []
    steps = task.steps_per_epoch + 2  # into the second epoch
    for step in range(steps):
        task.loss(lambda p, w: (pixels.append((p, w)), (None, None))[1], *divmod(step, task.steps_per_epoch))
    for ((p, w), targets), batch in zip(seen, plain_batches(task, steps), strict=True):
        plain_pixels, plain_widths, flat, lengths = batch
        assert torch.equal(p, plain_pixels) and torch.equal(w, plain_widths)
        assert flat.tolist() == [t for row in targets for t in row] and lengths.tolist() == [len(t) for t in targets]


def test_bad_values_are_one_line_errors():
    for bad in (["--steps", "4"], ["--repeats", "0"], ["--num-layers", "0"], ["--cell", "tree"], ["--full"],
                ["--seq-len", "8", "--corpus", "x.txt"]):
        result = runner.invoke(app, ["bench", "--task", "ctc", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, bad
    with pytest.raises(CharRNNError, match="--repeats"):
        run_bench(repeats=0)
