"""The training loop gives the same numbers it gave before it was made task-agnostic.

`fixtures/reference_runs.json` holds the per-step training losses and validation losses of two small
CPU runs, recorded with the single-function trainer of commit `recorded_with_commit` (fp32, one thread).
The same settings must reproduce them to 1e-6: any change to the order of random draws, the schedule,
clipping, the carried state or the evaluation shows up here. (Recording with 2 threads instead of 1
moved the losses by at most 2.4e-7.)
"""

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from charrnn.lm.task import train

REFERENCE = json.loads((Path(__file__).parent / "fixtures" / "reference_runs.json").read_text())


def val_losses(run_dir: Path) -> dict[str, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {str(r["step"]): r["val_loss"] for r in records if r["kind"] == "eval"}


@pytest.mark.parametrize("name", sorted(REFERENCE["runs"]))
def test_same_losses_as_before_the_refactor(tmp_path, corpus, name):
    expected = REFERENCE["runs"][name]
    summary = train(tiny_config(corpus, tmp_path / name, **expected["settings"]))
    assert summary.step == expected["steps"] and summary.stop_reason == expected["stop_reason"]
    assert summary.history == pytest.approx(expected["train_losses"], abs=1e-6, rel=0)
    assert val_losses(tmp_path / name) == pytest.approx(expected["val_losses"], abs=1e-6, rel=0)
    assert summary.val_loss == pytest.approx(expected["final_val_loss"], abs=1e-6, rel=0)
