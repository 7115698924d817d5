"""`charrnn translate bench`: the four loops run and report positive rates, the plain loops read exactly the batches
the real task trains on, and bad values are one-line errors. No figure is asserted (no timed tests)."""

import json

import pytest
import torch
from typer.testing import CliRunner

import charrnn.translate.task as translate_task
from charrnn.cli import app
from charrnn.core.distributed import World
from charrnn.core.errors import CharRNNError
from charrnn.translate.bench import (
    CHARRNN,
    CHARRNN_FED,
    LOOPS,
    PLAIN,
    TUTORIAL,
    PlainTranslator,
    pad_batch,
    plain_batches,
    run_bench,
    sample_pairs,
)
from charrnn.translate.config import TranslateTrainConfig

runner = CliRunner()
TINY = dict(steps=3, repeats=1, batch_size=4, hidden_size=16, max_pairs=200, device="cpu", precision="fp32")


def test_every_loop_reports_a_positive_rate_and_each_charrnn_loop_a_ratio():
    result = run_bench(**TINY)
    rows = {r["loop"]: r for r in result["rows"]}
    assert list(rows) == list(LOOPS)
    for row in rows.values():
        assert row["pairs_per_s"] > 0 and len(row["runs"]) == 1
    assert rows[CHARRNN]["against"] == PLAIN and rows[CHARRNN_FED]["against"] == TUTORIAL
    for loop in (CHARRNN, CHARRNN_FED):
        assert rows[loop]["ratio"] > 0
    assert rows[PLAIN]["ratio"] is None and rows[TUTORIAL]["ratio"] is None
    assert result["train_pairs"] == 200 and result["warmup_steps"] == 1 and result["precision"] == "fp32"


def test_cli_json_and_table():
    args = ["translate", "bench", "--steps", "3", "--repeats", "1", "--batch-size", "4", "--hidden-size", "16",
            "--cell", "gru", "--attention", "dot", "--max-pairs", "200", "--device", "cpu", "--precision", "fp32"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["cell"] == "gru" and out["attention"] == "dot"
    assert [r["loop"] for r in out["rows"]] == list(LOOPS) and all(r["pairs_per_s"] > 0 for r in out["rows"])
    shown = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "pairs/s" in shown.stdout and "tutorial style" in shown.stdout
    assert "measured charrnn (repeat 1)" in shown.stderr


def test_the_plain_loops_read_the_batches_the_task_trains_on(tmp_path, monkeypatch):
    data = sample_pairs(tmp_path / "pairs.tsv", 60, seed=0)
    config = TranslateTrainConfig(data=str(data), target_tokens="words", batch_size=8, val_frac=0.0, test_frac=0.0,
                                  hidden_size=16, out=str(tmp_path / "run"))
    task = translate_task.build(config, checkpoint=None, world=World(), device=torch.device("cpu"))
    seen = []
    monkeypatch.setattr(translate_task, "translate_loss", lambda model, ids, lengths, gold, *a: seen.append(
        (ids, lengths, gold)))
    steps = task.steps_per_epoch + 2  # into the second epoch
    for step in range(steps):
        task.loss(None, *divmod(step, task.steps_per_epoch))
    pads = (task.tokenizer.source.eod_id, task.tokenizer.unk_id)
    for (ids, lengths, gold), batch in zip(seen, plain_batches(task, steps), strict=True):
        plain = pad_batch(batch, *pads)
        assert all(torch.equal(a, b) for a, b in zip(plain, (ids, lengths, gold)))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", ["additive", "dot"])
@pytest.mark.parametrize("tutorial", [False, True])
def test_plain_translator_shapes(cell, attention, tutorial):
    model = PlainTranslator(tutorial, cell, source_vocab=7, vocab=5, embedding_dim=4, hidden_size=6,
                            attention=attention, attention_dim=3)
    ids = torch.tensor([[2, 3, 4, 0], [5, 6, 0, 0]])
    logits = model(ids, torch.tensor([4, 2]), torch.tensor([[1, 2, 3], [1, 4, 0]]))
    assert logits.shape == (2, 3, 5) and torch.isfinite(logits).all()


def test_bad_values_are_one_line_errors():
    for bad in (["--steps", "1"], ["--repeats", "0"], ["--hidden-size", "15"], ["--cell", "tree"],
                ["--attention", "cosine"], ["--max-pairs", "0"], ["--device", "tpu"]):
        result = runner.invoke(app, ["translate", "bench", *bad])
        assert result.exit_code == 2, (bad, result.output)
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output, bad
    with pytest.raises(CharRNNError, match="--batch-size"):
        run_bench(**dict(TINY, batch_size=300))
