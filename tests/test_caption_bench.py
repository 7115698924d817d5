"""`charrnn bench --task caption`: both loops run and report positive rates and a ratio, the plain loop reads exactly
the batches the real task trains on, and bad values are one-line errors. No figure is asserted (no timed tests)."""

import json

import pytest
import torch
from typer.testing import CliRunner

import charrnn.caption.task as caption_task
from charrnn.caption.bench import plain_batches, plain_task, run_bench, synthetic_captions
from charrnn.caption.config import CaptionTrainConfig
from charrnn.caption.data import read_captions
from charrnn.cli import app
from charrnn.core.errors import CharRNNError

runner = CliRunner()
ARGS = ["bench", "--task", "caption", "--steps", "5", "--repeats", "1", "--batch-size", "4", "--hidden-size", "16",
        "--device", "cpu", "--precision", "fp32"]


def test_json_names_the_rates_and_the_ratio():
    result = runner.invoke(app, [*ARGS, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["task"] == "caption" and out["precision"] == "fp32" and out["warmup_steps"] == 2
    [row] = out["rows"]
    assert (row["cell"], row["num_layers"], row["hidden_size"], row["batch_size"]) == ("lstm", 1, 16, 4)
    assert row["train_images_per_s"] > 0 and row["reference_train_images_per_s"] > 0 and row["train_ratio"] > 0
    assert row["train_ratio"] == pytest.approx(row["train_images_per_s"] / row["reference_train_images_per_s"],
                                               abs=2e-3)
    assert len(row["runs"]) == len(row["reference_runs"]) == 1


def test_table_and_progress():
    result = runner.invoke(app, ARGS, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "images/s" in result.stdout and "plain loop" in result.stdout and "ratio" in result.stdout
    assert "measured charrnn (repeat 1)" in result.stderr and "measured plain (repeat 1)" in result.stderr


def test_a_grid_of_sizes_gives_a_row_each():
    result = run_bench(steps=5, repeats=1, batch_size=2, cells=["gru"], hidden_sizes=[8, 12], image_size=16, images=4,
                       device="cpu", precision="fp32")
    assert [(r["cell"], r["hidden_size"]) for r in result["rows"]] == [("gru", 8), ("gru", 12)]
    assert result["train_images"] == 4 and all(r["train_images_per_s"] > 0 for r in result["rows"])


def test_synthetic_dataset_reads_as_a_caption_set(tmp_path):
    data = read_captions(synthetic_captions(tmp_path / "d", 6, 16), val_frac=0.0)
    assert len(data.train) == 6 and data.val is None
    assert all(1 <= len(refs) <= 3 and all(refs) for refs in data.train.captions)


def test_the_plain_loop_reads_the_batches_the_task_trains_on(tmp_path, monkeypatch):
    data = synthetic_captions(tmp_path / "d", 10, 16)
    config = CaptionTrainConfig(data=str(data), out=str(tmp_path / "run"), batch_size=4, val_frac=0.0, hidden_size=8,
                                image_size=16, seed=0)
    task = plain_task(config, torch.device("cpu"))
    seen = []
    monkeypatch.setattr(caption_task, "caption_loss", lambda model, images, tokens, *a, **k: (
        seen.append((images, tokens)), (None, None))[1])
    steps = task.steps_per_epoch + 2  # into the second epoch
    for step in range(steps):
        task.loss(None, *divmod(step, task.steps_per_epoch))
    for (images, tokens), (plain_images, plain_tokens) in zip(seen, plain_batches(task, steps), strict=True):
        assert torch.equal(images, plain_images) and torch.equal(tokens, plain_tokens)


def test_bad_values_are_one_line_errors():
    for bad in (["--steps", "4"], ["--repeats", "0"], ["--hidden-size", "0"], ["--cell", "tree"], ["--full"],
                ["--seq-len", "8"], ["--sample-chars", "5"], ["--corpus-mb", "1"], ["--task", "tagger"]):
        result = runner.invoke(app, ["bench", "--task", "caption", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, bad
    with pytest.raises(CharRNNError, match="--batch-size"):
        run_bench(batch_size=0)
