import json
import math
import threading

import numpy as np
import pytest
import torch
from conftest import tiny_config

from charrnn.core.checkpoint import load_checkpoint
from charrnn.core.config import CELLS
from charrnn.core.device import bf16_is_native, resolve_precision
from charrnn.core.errors import CharRNNError
from charrnn.core.trainer import StopReason, learning_rate
from charrnn.lm.config import LMTrainConfig
from charrnn.lm.task import resume_config, train


def losses_of(run_dir):
    return [json.loads(l)["loss"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(l)["kind"] == "train"]


def test_overfits_a_short_text(tmp_path):
    text = "hello world, hello charrnn. " * 4
    corpus = tmp_path / "hello.txt"
    corpus.write_text(text)
    summary = train(tiny_config(corpus, tmp_path / "run", cell="lstm", hidden_size=64, batch_size=1, seq_len=32,
                                val_frac=0.0, max_steps=150, eval_every=150, lr=1e-2, schedule="constant"))
    assert summary.history[0] > 2.5
    assert sum(summary.history[-10:]) / 10 < 0.3  # memorised


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_learns(tmp_path, corpus, cell):
    summary = train(tiny_config(corpus, tmp_path / cell, cell=cell, max_steps=40, eval_every=40))
    assert summary.val_loss is not None
    assert summary.history[-1] < summary.history[0] - 0.8


def test_run_directory_contents(tmp_path, corpus):
    run = tmp_path / "run"
    train(tiny_config(corpus, run))
    for name in ("best.pt", "last.pt", "run.json", "metrics.jsonl", "loss.svg", "corpus.bin", "corpus.json"):
        assert (run / name).exists(), name
    assert (run / "loss.svg").read_text().startswith("<svg")
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["train_state"]["step"] == 10
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert [e["step"] for e in evals] == [5, 10]
    assert all(abs(e["val_bpc"] - e["val_loss"] / math.log(2)) < 1e-9 for e in evals)


def test_resume_is_exact(tmp_path, corpus):
    # Dropout and a cosine schedule make the check strict: RNG state and schedule position must be restored.
    kw = dict(cell="lstm", num_layers=2, dropout=0.2, max_steps=12, eval_every=4)
    full = tmp_path / "full"
    train(tiny_config(corpus, full, **kw))

    part = tmp_path / "part"
    stop = threading.Event()

    def interrupt_at_7(event):
        if event["kind"] == "train" and event["step"] == 7:
            stop.set()  # what Ctrl-C does

    stopped = train(tiny_config(corpus, part, **kw), on_event=interrupt_at_7, stop=stop)
    assert stopped.stop_reason is StopReason.INTERRUPTED and stopped.step == 7
    resumed = train(resume_config(part), resume=True)
    assert resumed.step == 12
    assert losses_of(part) == pytest.approx(losses_of(full), rel=1e-5, abs=1e-6)


def test_resume_extends_with_max_steps(tmp_path, corpus):
    run = tmp_path / "run"
    train(tiny_config(corpus, run, max_steps=6))
    with pytest.raises(CharRNNError, match="already finished"):
        train(resume_config(run), resume=True)
    more = train(resume_config(run, max_steps=9), resume=True)
    assert more.step == 9 and len(losses_of(run)) == 9


def test_resume_refuses_changed_settings(tmp_path, corpus):
    run = tmp_path / "run"
    train(tiny_config(corpus, run, max_steps=3))
    with pytest.raises(CharRNNError, match="--hidden-size cannot change"):
        resume_config(run, hidden_size=64)
    with pytest.raises(CharRNNError, match="not a run directory"):
        resume_config(tmp_path)


def test_existing_run_is_not_overwritten(tmp_path, corpus):
    run = tmp_path / "run"
    train(tiny_config(corpus, run, max_steps=3))
    before = (run / "last.pt").read_bytes()
    with pytest.raises(CharRNNError, match="already holds a run"):
        train(tiny_config(corpus, run, max_steps=3))
    assert (run / "last.pt").read_bytes() == before
    train(tiny_config(corpus, run, max_steps=2), overwrite=True)


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus, monkeypatch):
    import charrnn.lm.task as lm_module

    calls = {"n": 0}
    real_detach = lm_module.detach_state

    def poisoned_after_six(state):
        calls["n"] += 1
        state = real_detach(state)
        return tuple(torch.full_like(s, float("nan")) for s in state) if calls["n"] >= 6 else state

    monkeypatch.setattr(lm_module, "detach_state", poisoned_after_six)
    run = tmp_path / "run"
    summary = train(tiny_config(corpus, run, max_steps=50, eval_every=5))
    assert summary.stop_reason == "diverged" and summary.step == 6
    assert "NaN" in summary.message and "lower --lr" in summary.message
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["train_state"]["step"] == 5
    assert all(torch.isfinite(t).all() for t in ckpt["model_state"].values())


def test_exploding_loss_threshold(tmp_path, corpus):
    summary = train(tiny_config(corpus, tmp_path / "run", cell="rnn", optimizer="sgd", momentum=0.0, lr=1e4,
                                grad_clip=0, schedule="constant", max_steps=50, eval_every=1))
    assert summary.stop_reason is StopReason.DIVERGED and "no checkpoint had been written yet" in summary.message
    # The advice is what can work: --lr cannot change on resume, so it is a new run's.
    assert "start a new run with a lower --lr (now 10000)" in summary.message


def test_divergence_advice_does_not_suggest_what_is_already_set(tmp_path, corpus, monkeypatch):
    import charrnn.lm.task as lm_module

    real_detach = lm_module.detach_state
    monkeypatch.setattr(lm_module, "detach_state",
                        lambda state: tuple(torch.full_like(s, float("nan")) for s in real_detach(state)))
    summary = train(tiny_config(corpus, tmp_path / "run", explode_factor=0, max_steps=50))
    assert summary.stop_reason is StopReason.DIVERGED and "became NaN/inf" in summary.message
    assert "--explode-factor" not in summary.message


def test_every_optimizer_and_schedule_runs(tmp_path, corpus):
    for i, (opt, sched) in enumerate([("adam", "constant"), ("rmsprop", "exponential"), ("sgd", "cosine"),
                                      ("adagrad", "constant")]):
        s = train(tiny_config(corpus, tmp_path / str(i), optimizer=opt, schedule=sched, nesterov=opt == "sgd",
                              max_steps=4, eval_every=4, lr=1e-2))
        assert s.step == 4 and math.isfinite(s.val_loss)


def test_epochs_stop_rule(tmp_path, corpus):
    s = train(tiny_config(corpus, tmp_path / "run", epochs=1.0, max_steps=None, eval_every=1000))
    assert s.stop_reason == "epochs" and s.epoch == pytest.approx(1.0)


def test_patience_stops_early(tmp_path, corpus):
    s = train(tiny_config(corpus, tmp_path / "run", lr=1e-9, schedule="constant", max_steps=100, eval_every=1,
                          patience=2))
    assert s.stop_reason == "patience" and s.step < 100


def test_learning_rate_schedules():
    cfg = LMTrainConfig(lr=1.0, warmup_steps=10, min_lr_frac=0.1)
    assert learning_rate(cfg, 0, 0, 0.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 50, 0, 0.0) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 0, 1.0) == pytest.approx(0.1)
    assert learning_rate(cfg, 50, 0, 0.5) == pytest.approx(0.55)
    exp = LMTrainConfig(lr=1.0, schedule="exponential", lr_decay=0.5, lr_decay_after=2)
    assert [learning_rate(exp, 0, e, 0) for e in range(4)] == [1.0, 1.0, 0.5, 0.25]


def test_bad_settings_are_clear_errors(tmp_path, corpus):
    with pytest.raises(CharRNNError, match="--optimizer"):
        LMTrainConfig(optimizer="lion")
    with pytest.raises(CharRNNError, match="--lr"):
        LMTrainConfig(lr=-1)
    with pytest.raises(CharRNNError, match="too short for one batch"):
        train(tiny_config(corpus, tmp_path / "r", batch_size=512, seq_len=512))
    with pytest.raises(CharRNNError, match="--precision"):
        LMTrainConfig(precision="fp16")


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_autocast_trains_on_any_cpu(tmp_path, corpus, cell):
    # On a CPU without native bf16 oneDNN has no bf16 LSTM kernel; the LSTM then runs PyTorch's own fp32 one.
    s = train(tiny_config(corpus, tmp_path / "run", cell=cell, precision="bf16", max_steps=20, eval_every=20))
    assert s.history[-1] < s.history[0] - 0.5
    assert load_checkpoint(tmp_path / "run" / "last.pt")["meta"]["precision"] == "bf16"
    assert torch.backends.mkldnn.enabled  # switched off for the bf16 forward pass only, if at all


def test_auto_precision_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_is_native(cpu) else "fp32")


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path, corpus):
    import os
    import signal

    def press_ctrl_c(event):
        if event["kind"] == "train" and event["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    s = train(tiny_config(corpus, tmp_path / "run", max_steps=100), on_event=press_ctrl_c)
    assert s.stop_reason is StopReason.INTERRUPTED and s.step == 3
    assert load_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["step"] == 3


def test_sigterm_stops_like_ctrl_c_and_the_run_resumes(tmp_path, corpus):
    import os
    import signal

    def terminate(event):
        if event["kind"] == "train" and event["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    s = train(tiny_config(corpus, run, max_steps=100, eval_every=50), on_event=terminate)
    assert s.stop_reason is StopReason.INTERRUPTED and s.step == 2
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 2  # saved before its first evaluation
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone once training returns
    assert train(resume_config(run, max_steps=4), resume=True).step == 4


def test_second_signal_stops_at_once(tmp_path, corpus):
    import os
    import signal

    def terminate_twice(event):
        if event["kind"] == "train" and event["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(corpus, tmp_path / "run", max_steps=100), on_event=terminate_twice)


def test_byte_level_and_document_separator_runs(tmp_path):
    from charrnn.lm.model import load_model
    from charrnn.lm.sample import SampleSettings, sample

    corpus = tmp_path / "docs.txt"
    corpus.write_text("第一篇：你好，世界。\n\n第二篇：再见。\n\n" * 60, encoding="utf-8")
    run = tmp_path / "bytes"
    train(tiny_config(corpus, run, byte_level=True, max_steps=3, eval_every=3))
    model, tok, _ = load_model(run)
    assert tok.byte_level and len(tok.codes) < 256
    text = sample(model, tok, prime="第", length=40, settings=SampleSettings(1.0), seed=0, stop_at_eod=False)[0]
    # 40 byte tokens are joined back into text: a multi-byte character counts once (invalid bytes as U+FFFD).
    assert 0 < len(text) <= 40 and text == sample(model, tok, prime="第", length=40,
                                                  settings=SampleSettings(1.0), seed=0, stop_at_eod=False)[0]

    run = tmp_path / "docs"
    train(tiny_config(corpus, run, document_separator="\n\n", cell="gru", hidden_size=64, batch_size=2,
                      seq_len=32, max_steps=150, eval_every=150, schedule="constant"))
    model, tok, _ = load_model(run)
    ids = np.fromfile(run / "corpus.bin", dtype=tok.dtype)
    assert (ids == tok.eod_id).sum() == 1 + 120  # the leading <eod> and one per separator
    # A model that has learned the documents ends a sample at the end of one.
    out = sample(model, tok, prime="第二篇：", length=200, settings=SampleSettings(0.0))[0]
    assert len(out) < 200 and "\n\n" not in out


def evals_of(run_dir):
    return [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["kind"] == "eval"]


def test_ctrl_c_leaves_without_evaluating(tmp_path, corpus, monkeypatch):
    # The evaluation a stop would have run at the end is left for the resume: Ctrl-C leaves promptly.
    import os
    import signal

    from charrnn.lm.task import LanguageModelTask

    evaluated = []
    real = LanguageModelTask.evaluate
    monkeypatch.setattr(LanguageModelTask, "evaluate", lambda self, **kw: evaluated.append(1) or real(self, **kw))

    def press_ctrl_c(event):
        if event["kind"] == "train" and event["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    s = train(tiny_config(corpus, run, max_steps=100), on_event=press_ctrl_c)
    assert s.stop_reason is StopReason.INTERRUPTED and evaluated == [] and not (run / "best.pt").exists()
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 3
    assert train(resume_config(run, max_steps=5), resume=True).step == 5 and evals_of(run) == [5]


def test_a_signal_during_an_evaluation_stops_it_and_the_resume_redoes_it(tmp_path, corpus, monkeypatch):
    import os
    import signal

    from charrnn.lm import task as lm_task

    real, asked = lm_task.evaluate, []

    def evaluate_with_a_signal(*args, should_stop, **kw):
        def counting():
            asked.append(1)
            if len(asked) == 2:  # SIGTERM arrives once the first chunk is scored, before the second
                os.kill(os.getpid(), signal.SIGTERM)
            return should_stop()
        return real(*args, should_stop=counting, **kw)

    monkeypatch.setattr(lm_task, "evaluate", evaluate_with_a_signal)
    run = tmp_path / "run"
    big = tmp_path / "big.txt"
    big.write_text(corpus.read_text() * 20)  # ~4,000 validation characters: 16 chunks in one stream
    s = train(tiny_config(big, run, max_steps=10, eval_every=5, eval_streams=1))
    assert s.stop_reason is StopReason.INTERRUPTED and s.step == 5 and len(asked) == 2  # no chunk after it
    assert "the evaluation it stopped is done when the run resumes" in s.message
    ts = load_checkpoint(run / "last.pt")["train_state"]
    assert ts["step"] == 5 and ts["evaluated"] is False and evals_of(run) == [] and not (run / "best.pt").exists()

    monkeypatch.setattr(lm_task, "evaluate", real)
    assert train(resume_config(run), resume=True).step == 10
    assert evals_of(run) == [5, 10]  # the evaluation of step 5 first, then training went on
    assert load_checkpoint(run / "best.pt")["train_state"]["evaluated"] is True


def test_a_stopped_final_evaluation_is_done_on_resume(tmp_path, corpus, monkeypatch):
    from charrnn.core.errors import StopRequested
    from charrnn.lm.task import LanguageModelTask

    def stopped(self, **kw):
        raise StopRequested

    monkeypatch.setattr(LanguageModelTask, "evaluate", stopped)
    run = tmp_path / "run"
    s = train(tiny_config(corpus, run, max_steps=7, eval_every=100))  # the only evaluation is the final one
    assert s.stop_reason is StopReason.INTERRUPTED and s.step == 7
    monkeypatch.undo()
    s = train(resume_config(run), resume=True)  # not "already finished": its evaluation is still to do
    assert s.stop_reason is StopReason.MAX_STEPS and s.step == 7 and evals_of(run) == [7]
    with pytest.raises(CharRNNError, match="already finished"):
        train(resume_config(run), resume=True)


class Clock:
    """A clock for the trainer that moves only when told: a step takes 1 s, an evaluation 10 s."""

    def __init__(self):
        self.now = 1000.0

    def perf_counter(self):
        return self.now


def test_the_time_budget_counts_the_final_evaluation(tmp_path, corpus, monkeypatch):
    from charrnn.core import trainer
    from charrnn.lm.task import LanguageModelTask

    clock = Clock()
    monkeypatch.setattr(trainer, "time", clock)
    loss, evaluate = LanguageModelTask.loss, LanguageModelTask.evaluate

    def slow_loss(self, *args):
        clock.now += 1.0
        return loss(self, *args)

    def slow_evaluate(self, **kw):
        clock.now += 10.0
        return evaluate(self, **kw)

    monkeypatch.setattr(LanguageModelTask, "loss", slow_loss)
    monkeypatch.setattr(LanguageModelTask, "evaluate", slow_evaluate)
    start = clock.now
    s = train(tiny_config(corpus, tmp_path / "run", max_steps=None, time_budget=1.0, eval_every=30))
    # 30 steps (30 s), an evaluation (10 s), then training stops at 50 s to leave the final evaluation its 10 s.
    assert s.stop_reason is StopReason.TIME_BUDGET and s.step == 40 and evals_of(tmp_path / "run") == [30, 40]
    assert clock.now - start == 60.0


def test_throughput_averages_over_training_time_only(monkeypatch):
    """`average` is items over the time of the steps, an evaluation (before a `restart`) left out; `rate` is the
    latest window's (a second or more)."""
    import charrnn.core.trainer as trainer

    clock = iter([0.0, 1.0, 2.0, 12.0, 14.0])  # made, 2 steps of 1 s, an evaluation of 10 s, a step of 2 s
    monkeypatch.setattr(trainer.time, "perf_counter", lambda: next(clock))
    t = trainer.Throughput()
    t.add(100)
    t.add(100)
    t.restart()
    t.add(100)
    assert t.average == pytest.approx(300 / 4) and t.rate == pytest.approx(100 / 2)
