import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import tiny_config

from charrnn.core.checkpoint import load_checkpoint
from charrnn.lm.task import train


def losses(run):
    return [json.loads(l)["loss"] for l in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in l]


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_the_whole_batch(tmp_path, corpus):
    steps = 6
    single = tmp_path / "single"
    train(tiny_config(corpus, single, cell="lstm", num_layers=2, max_steps=steps, eval_every=3))

    ddp = tmp_path / "ddp"
    args = ["train", corpus, "--out", ddp, "--cell", "lstm", "--num-layers", 2, "--hidden-size", 32,
            "--embedding-dim", 16, "--batch-size", 4, "--seq-len", 16, "--max-steps", steps, "--eval-every", 3,
            "--lr", 1e-2, "--seed", 0, "--device", "cpu", "--precision", "fp32", "--sample-length", 0]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "charrnn", *map(str, args)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    a, b = load_checkpoint(single / "last.pt"), load_checkpoint(ddp / "last.pt")
    assert a["train_state"]["step"] == b["train_state"]["step"] == steps
    for name, tensor in a["model_state"].items():
        assert torch.allclose(tensor, b["model_state"][name], atol=1e-5), name
    for s1, s2 in zip(a["train_state"]["task"]["hidden_state"], b["train_state"]["task"]["hidden_state"]):
        assert s1.shape == s2.shape and torch.allclose(s1, s2, atol=1e-5)
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-5)
    assert len(b["train_state"]["rng"]) == 2  # each rank's generators, for resuming

    # Resume under DDP continues the same run.
    more = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "charrnn", "train", "--resume", str(ddp), "--max-steps", str(steps + 2),
                           "--sample-length", "0"], env=env, capture_output=True, text=True, timeout=240)
    assert more.returncode == 0, more.stderr[-3000:]
    assert load_checkpoint(ddp / "last.pt")["train_state"]["step"] == steps + 2
