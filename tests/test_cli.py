import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
from conftest import TEXT
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.lm.config import LMTrainConfig

runner = CliRunner()
WIDE = {"COLUMNS": "250"}  # help on one line per option, so that a flag and its default are not split


def run(*args, **kw):
    return runner.invoke(app, [str(a) for a in args], **kw)


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def more_command(stderr: str) -> list[str]:
    """The arguments of the `more: charrnn sample ...` hint printed after training."""
    line = next(l for l in stderr.splitlines() if l.startswith("more: "))
    args = shlex.split(line.removeprefix("more: "))
    assert args[:2] == ["charrnn", "sample"], line
    return args[1:]


TINY = ["--cell", "gru", "--num-layers", "1", "--hidden-size", "32", "--embedding-dim", "8", "--batch-size", "4",
        "--seq-len", "16", "--device", "cpu"]


def test_train_then_sample_eval_info(tmp_path, corpus):
    out = tmp_path / "run"
    r = run("train", corpus, "--out", out, "--max-steps", 8, "--eval-every", 4, *TINY, "--sample-length", 40)
    assert r.exit_code == 0, r.output
    assert "training summary" in r.stderr and "best val_loss" in r.stderr and "max_steps" in r.stderr
    assert re.search(r"step +4 +val_loss \d\.\d{4} +val_bpc", r.stderr)  # the evaluation at step 4
    assert (out / "best.pt").exists() and (out / "loss.svg").exists()
    assert more_command(r.stderr) == ["sample", str(out), "--prime=First Citizen:", "--length", "1000"]

    r = run("sample", out, "--prime", "First", "--length", 30, "--seed", 3, "--no-stop-at-eod")
    assert r.exit_code == 0 and r.stdout.startswith("First") and len(r.stdout.rstrip("\n")) == 5 + 30
    again = run("sample", out, "--prime", "First", "--length", 30, "--seed", 3, "--no-stop-at-eod")
    assert again.stdout == r.stdout

    r = run("sample", out, "--json", "--num-samples", 3, "--length", 20, "--seed", 1, "--top-k", 5, "--top-p", 0.9)
    assert r.exit_code == 0
    samples = json.loads(r.stdout)["samples"]
    assert len(samples) == 3 and all(len(s) <= 20 for s in samples)

    r = run("sample", out, "--beam-size", 3, "--length", 20, "--prime", "All:")
    assert r.exit_code == 0 and r.stdout.startswith("All:")

    r = run("eval", out, corpus, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["chars"] == len(corpus.read_text()) and res["unknown_chars"] == 0
    assert res["bits_per_char"] == pytest.approx(res["nats_per_char"] / 0.6931471805599453)

    r = run("info", out, "--json")
    assert r.exit_code == 0
    info = json.loads(r.stdout)
    assert info["step"] == 8 and info["task"] == "lm" and info["hidden_size"] == 32
    r = run("info", out)
    assert r.exit_code == 0 and re.search(r"task +│ lm ", r.stdout) and re.search(r"step +│ 8 ", r.stdout)

    r = run("train", "--resume", out, "--max-steps", 10, "--sample-length", 0)
    assert r.exit_code == 0, r.output
    assert json.loads(run("info", out / "last.pt", "--json").stdout)["step"] == 10


def test_train_json_is_the_summary(tmp_path, corpus):
    out = tmp_path / "run"
    r = run("train", corpus, "--out", out, "--max-steps", 3, "--eval-every", 3, *TINY, "--json",
            "--document-separator", "\\n\\n")  # typed as on a shell line: backslash, n
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["step"] == 3 and summary["stop_reason"] == "max_steps" and summary["unit"] == "chars"
    assert summary["selection"] == "val_loss" and summary["best"] == summary["val_loss"]
    assert json.loads(run("info", out, "--json").stdout)["document_separator"] == "\n\n"  # escapes read


def test_sample_hint_fits_the_corpus(tmp_path):
    # C code: no R, O, M or E, a backslash and a quote in the first line, and a run directory with a space.
    code = tmp_path / "prog.c"
    code.write_text('puts("hi\\n"); // it\'s\nint main(void) {\n    return 0;\n}\n' * 40, encoding="utf-8")
    out = tmp_path / "c run"
    r = run("train", code, "--out", out, "--max-steps", 2, "--eval-every", 2, *TINY, "--sample-length", 10)
    assert r.exit_code == 0, r.output
    assert "ROMEO" not in r.stderr
    prime = 'puts("hi\\n"); // it\''  # the first line's first 20 characters, as they are
    args = more_command(r.stderr)
    assert args[1] == str(out) and args[2] == "--prime=" + prime.replace("\\", "\\\\")
    r = run(*args[:3], "--length", 5, "--seed", 0)  # the suggested command works
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(prime)


def test_hint_prime_only_when_the_model_can_read_it(tmp_path):
    from charrnn.cli.lm import _hint_prime
    from charrnn.core.tokenizer import CharTokenizer

    text = tmp_path / "t.txt"
    text.write_text("\n\n  Zebras everywhere, all over the plain\nzoo\n", encoding="utf-8")
    assert _hint_prime(CharTokenizer.from_text(text.read_text()), str(text), "utf-8") == "  Zebras everywhere,"
    assert _hint_prime(CharTokenizer.from_text("abc zoo\n"), str(text), "utf-8") == ""  # Z is unknown
    assert _hint_prime(CharTokenizer.from_text("abc"), str(tmp_path / "gone.txt"), "utf-8") == ""


TRAIN_FLAGS = ["--" + f.name.replace("_", "-") for f in fields(LMTrainConfig) if f.name != "corpus"]
OWN_OPTIONS = {
    "train": [*TRAIN_FLAGS, "--learning-rate", "--resume", "--overwrite", "--sample-length", "--json", "CORPUS"],
    "sample": ["CHECKPOINT", "--prime", "--length", "--temperature", "--top-k", "--top-p", "--greedy", "--seed",
               "--num-samples", "--stop", "--no-stop-at-eod", "--beam-size", "--length-alpha", "--map-unknown",
               "--device", "--json"],
    "eval": ["CHECKPOINT", "TEXT_FILE", "--encoding", "--map-unknown", "--streams", "--device", "--json"],
    "info": ["CHECKPOINT", "--json"],
    "bench": ["--task", "--full", "--cell", "--num-layers", "--hidden-size", "--batch-size", "--seq-len", "--steps",
              "--repeats", "--sample-chars", "--device", "--precision", "--corpus-mb", "--corpus", "--json"],
    "dump": ["CHECKPOINT", "TEXT_FILE", "--text", "--out", "--format", "--top-k", "--encoding", "--map-unknown",
             "--device", "--json"],
    "viz": ["ACTIVATIONS", "--out", "--max-chars", "--kinds", "--top", "--encoding", "--map-unknown", "--device",
            "--json"],
    "cells": ["CHECKPOINT", "TEXT_FILE", "ACTIVATIONS", "--top", "--max-chars", "--html", "--plot", "--encoding",
              "--map-unknown", "--device", "--json"],
    "gradients": ["RUN", "TEXT_FILE", "--text", "--max-distance", "--positions", "--threshold", "--untrained",
                  "--batch-size", "--plot", "--encoding", "--map-unknown", "--device", "--json"],
    # The groups' own commands; tests/test_caption_task.py and tests/test_ctc_task.py have the rest.
    "caption": ["train", "sample", "eval", "make-emoji"],
    "ctc": ["train", "decode", "eval", "tune-lm", "make-lines"],
    "classify": ["train", "predict", "eval", "trace"],  # tests/test_classify_task.py has the rest
    "tag": ["train", "predict", "eval"],  # tests/test_tag_task.py has the rest
    "translate": ["train", "run", "eval", "bench"],  # tests/test_translate_task.py has the rest
}


def test_help_lists_every_command_with_its_options():
    r = run("--help", env=WIDE)
    assert r.exit_code == 0
    panel = r.stdout.split("Commands", 1)[1]
    listed = {m.group(1) for m in re.finditer(r"^\W*([a-z]+) {2,}\S", panel, re.MULTILINE)}
    assert listed == set(OWN_OPTIONS)
    for command, options in OWN_OPTIONS.items():
        r = run(command, "--help", env=WIDE)
        assert r.exit_code == 0, r.output
        for option in options:
            assert re.search(rf"(?<![\w-]){option}(?![\w-])", r.stdout), f"{command} --help lacks {option}"


def test_help_shows_the_config_defaults_and_choices():
    text = run("train", "--help", env=WIDE).stdout.split("Example:", 1)[1].split("\n", 1)[1]  # after the example
    for flag, value in [("--lr", LMTrainConfig.lr), ("--seed", LMTrainConfig.seed), ("--cell", LMTrainConfig.cell),
                        ("--eval-every", LMTrainConfig.eval_every), ("--hidden-size", LMTrainConfig.hidden_size)]:
        line = next(l for l in text.splitlines() if re.search(rf"(?<![\w-]){flag}(?![\w-])", l))
        assert f"[default: {value}]" in line, line
    assert "<adamw|adam|rmsprop|sgd|adagrad>" in text and "<constant|cosine|exponential>" in text


def walk_commands():
    """(command line, click command) for the root, each group and each command under them."""
    import typer

    todo = [(["charrnn"], typer.main.get_command(app))]
    while todo:
        path, command = todo.pop(0)
        yield " ".join(path), command
        todo += [(path + [name], sub) for name, sub in getattr(command, "commands", {}).items()]


def test_every_help_ends_with_an_example():
    walked = [path for path, _ in walk_commands()]
    assert {"charrnn train", "charrnn caption", "charrnn caption make-emoji", "charrnn ctc tune-lm"} <= set(walked)
    for path, command in walk_commands():
        last = (command.help or "").strip().splitlines()[-1].strip()
        assert last.startswith(f"Example: {path} " if path != "charrnn" else "Example: charrnn "), f"{path}: {last}"
        r = run(*path.split()[1:], "--help", env=WIDE)
        assert r.exit_code == 0 and last in r.stdout, r.output


# The same flag with another meaning, on purpose: where a command writes (a run directory to train, a file to
# dump or viz), each task's validation and test splits and the parts eval scores (of a corpus, images, lines,
# labelled texts), dump's output format against classify's input format, bench's grid of models, the cell to
# open a page on, make-lines' own output directory, dump's stored predictions; caption's --attention switches
# attention on or off, translate's chooses its kind (a translator always attends).
DIFFERENT_ON_PURPOSE = {"--out", "-o", "--val-frac", "--cell", "--num-layers", "--hidden-size", "--overwrite",
                        "--top-k", "--test-frac", "--part", "--format", "--attention"}
# The same flag and meaning in the words of each task that shows it (what a batch holds, the metric that picks
# best.pt, what one beam means, whether a seed is fixed, what --plot draws): one declaration in options.py that takes
# those words, so the names and bounds still agree; test_cli_help.py checks that no task's words reach another's help.
# (`translate bench` measures four loops and reports medians, `bench` two and keeps the best: --steps and
# --repeats say so in each one's words.)
WORDED_PER_TASK = {"--resume", "--batch-size", "--patience", "--explode-factor", "--embedding-dim", "--channels",
                   "--skip-bad", "--beam-size", "--num-samples", "--seed", "--max-chars", "--steps", "--repeats",
                   "--show-attention", "--plot"}


def test_a_shared_option_is_declared_once():
    declared = {}  # flag -> {(names, help, min, max): [commands]}
    for path, command in walk_commands():
        for param in command.params:
            if type(param).__name__ == "TyperOption" and not param.hidden:  # hidden: an old spelling still read
                for flag in param.opts + param.secondary_opts:
                    words = None if flag in WORDED_PER_TASK else param.help
                    key = (tuple(param.opts), words, param.min, param.max)
                    declared.setdefault(flag, {}).setdefault(key, []).append(path)
    shared = {flag for flag, ways in declared.items() if sum(map(len, ways.values())) > 1}
    assert {"--beam-size", "--temperature", "--length-alpha", "--seed", "--device", "--json", "--max-chars",
            "--lm", "--time-budget", "--max-steps", "--embedding-dim"} <= shared - DIFFERENT_ON_PURPOSE
    for flag in shared - DIFFERENT_ON_PURPOSE:
        assert len(declared[flag]) == 1, f"{flag} is declared {len(declared[flag])} ways: {declared[flag]}"


def test_every_command_answers_json_and_every_model_runs_on_a_device():
    for path, command in walk_commands():
        if hasattr(command, "commands"):
            continue
        flags = {flag for param in command.params for flag in getattr(param, "opts", [])}
        assert "--json" in flags, path
        runs_a_model = path.split()[-1] not in ("info", "make-emoji", "make-lines")
        assert ("--device" in flags) == runs_a_model, path


def test_errors_look_the_same_in_every_group(tmp_path):
    one_line_error(run("sample", "--beam-size", 0), "--beam-size")
    one_line_error(run("viz", tmp_path / "nothing.txt", "--max-chars", 1), "--max-chars")
    one_line_error(run("dump", tmp_path / "run", "--text", "hi", "--dtype", "int8"), "--dtype")
    one_line_error(run("caption", "sample", "cat.png", "--length-alpha", 11), "--length-alpha", "0 and 10")
    one_line_error(run("caption", "sample", "cat.png", "--temperature", -1), "--temperature")
    one_line_error(run("caption", "sample", "cat.png", "--seed", 2**64), "--seed", "2**64 - 1")
    one_line_error(run("caption", "eval", tmp_path, "--part", "test"), "--part")
    one_line_error(run("caption", "sample"), "IMAGE")
    one_line_error(run("ctc", "decode", "line.png", "--lm-unknown", "ignore"), "--lm-unknown")
    one_line_error(run("ctc", "tune-lm", tmp_path), "--lm")
    one_line_error(run("ctc", "make-lines", tmp_path / "missing.txt", tmp_path / "lines", "--count", 0), "--count")
    one_line_error(run("ctc", "frobnicate"), "No such command")
    # What the operating system refuses (here: a directory that cannot be made) is one line too.
    (tmp_path / "t.txt").write_text(TEXT[:200])
    one_line_error(run("viz", tmp_path / "t.txt", "--out", "/proc/charrnn/cells.html", "--device", "cpu"),
                   "/proc/charrnn")


def test_make_lines_still_reads_its_old_line_length_flags(monkeypatch, tmp_path):
    import charrnn.ctc.linegen
    from charrnn.core.errors import CharRNNError

    def make_lines(*args, **kwargs):
        raise CharRNNError(f"lines of {kwargs['min_chars']} to {kwargs['max_chars']} characters")

    monkeypatch.setattr(charrnn.ctc.linegen, "make_lines", make_lines)
    for flags in (["--min-line-chars", 3, "--max-line-chars", 9], ["--min-chars", 3, "--max-chars", 9]):
        one_line_error(run("ctc", "make-lines", tmp_path / "t.txt", tmp_path / "out", *flags), "3 to 9 characters")


def test_help_does_not_import_torch():
    code = ("import sys\n"
            "import charrnn.cli\n"
            "assert 'torch' not in sys.modules, 'import charrnn.cli loaded torch'\n"
            "from typer.testing import CliRunner\n"
            "for args in (['--help'], ['train', '--help'], ['sample', '--help'], ['bench', '--help']):\n"
            "    result = CliRunner().invoke(charrnn.cli.app, args)\n"
            "    assert result.exit_code == 0, result.output\n"
            "assert 'torch' not in sys.modules, '--help loaded torch'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_python_m_charrnn_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "charrnn", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "train" in done.stdout and "Usage" in done.stdout


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "not_utf8", "short"])
def test_bad_corpus_gives_one_line_and_exit_2(tmp_path, case):
    path = tmp_path / "corpus.txt"
    needle = {"missing": "no such file", "directory": "is a directory", "empty": "is empty",
              "not_utf8": "--encoding", "short": "too short for one batch"}[case]
    if case == "directory":
        path = tmp_path
    elif case == "empty":
        path.write_text("")
    elif case == "not_utf8":
        path.write_bytes(b"caf\xe9 " * 100)
    elif case == "short":
        path.write_text("just a few characters")
    one_line_error(run("train", path, "--out", tmp_path / "run", *TINY), needle)


def test_bad_options_give_one_line_and_exit_2(tmp_path, corpus, trained_run):
    out = tmp_path / "run"
    one_line_error(run("train", corpus, "--out", out, "--cell", "transformer"), "--cell", "transformer")
    one_line_error(run("train", corpus, "--out", out, "--optimizer", "adamx"), "--optimizer")
    one_line_error(run("train", corpus, "--out", out, "--precision", "fp16"), "--precision")
    one_line_error(run("train", corpus, "--out", out, "--batch-size", "many"), "--batch-size")
    one_line_error(run("train", corpus, "--out", out, "--lr", "-1"), "--lr")
    one_line_error(run("train", corpus, "--out", out, "--sample-length", "-1"), "--sample-length")
    one_line_error(run("train", "--resume", tmp_path / "nothing"), "no such run directory")
    one_line_error(run("train", "--resume", trained_run[0], "--hidden-size", 64), "cannot change when resuming")
    # Given at its default value is still given: the saved run's lr must not silently win or lose.
    one_line_error(run("train", "--resume", trained_run[0], "--lr", LMTrainConfig.lr), "--lr", "cannot change")
    one_line_error(run("train", corpus, "--resume", trained_run[0]), "CORPUS or --resume")
    one_line_error(run("train", "--resume", trained_run[0], "--out", out), "--out cannot change")
    one_line_error(run("train", "--resume", trained_run[0], "--overwrite"), "--overwrite and --resume")
    one_line_error(run("sample", tmp_path / "missing.pt"), "no such checkpoint")
    one_line_error(run("sample", trained_run[0], "--prime", "Zebra"), "'Z'", "--map-unknown")
    one_line_error(run("sample", trained_run[0], "--temperature", "-1"), "--temperature")
    one_line_error(run("sample", trained_run[0], "--top-p", "1.5"), "--top-p")
    one_line_error(run("sample", trained_run[0], "--beam-size", 2, "--num-samples", 2), "--beam-size")
    one_line_error(run("sample", corpus), "not a charrnn checkpoint")
    one_line_error(run("eval", trained_run[0], tmp_path / "missing.txt"), "no such file")
    one_line_error(run("eval", trained_run[0], corpus, "--streams", 0), "--streams")
    one_line_error(run("frobnicate"), "No such command")


def test_resume_passes_only_the_options_given(monkeypatch, trained_run):
    import charrnn.lm.task
    from charrnn.core.errors import CharRNNError

    seen = {}

    def resume_config(run_dir, **overrides):
        seen.update(run_dir=run_dir, overrides=overrides)
        raise CharRNNError("stop before training")

    monkeypatch.setattr(charrnn.lm.task, "resume_config", resume_config)
    r = run("train", "--resume", trained_run[0], "--max-steps", 5, "--device", "auto", "--compile",
            "--sample-length", 0)
    one_line_error(r, "stop before training")
    assert seen == {"run_dir": trained_run[0], "overrides": {"max_steps": 5, "device": "auto", "compile": True}}


def fake_summary(**kw):
    from charrnn.core.trainer import StopReason, TrainSummary

    base = dict(run_dir="runs/it's mine", step=55, epoch=0.5, elapsed_s=3.0, stop_reason=StopReason.MAX_STEPS,
                train_loss=1.5, val_loss=1.6, selection="val_loss", best=1.6, best_step=50, rate=1000.0,
                unit="chars", num_parameters=100, message="")
    return TrainSummary(**{**base, **kw})


def test_interrupted_run_says_how_to_continue(monkeypatch, corpus):
    import charrnn.lm.task
    from charrnn.core.trainer import StopReason

    summary = fake_summary(stop_reason=StopReason.INTERRUPTED,
                           message="interrupted at step 55 (a checkpoint was written)")
    monkeypatch.setattr(charrnn.lm.task, "train", lambda config, on_event=None, **kw: summary)
    r = run("train", corpus)
    assert r.exit_code == 130, r.output
    assert "interrupted at step 55" in r.stderr
    assert f"continue with: charrnn train --resume {shlex.quote(summary.run_dir)}" in r.stderr
    assert "more:" not in r.stderr  # no sample of an interrupted run


def test_diverged_run_exits_1_with_its_message(monkeypatch, corpus):
    import charrnn.lm.task
    from charrnn.core.trainer import StopReason

    summary = fake_summary(stop_reason=StopReason.DIVERGED, message="the loss became NaN at step 7; lower --lr")
    monkeypatch.setattr(charrnn.lm.task, "train", lambda config, on_event=None, **kw: summary)
    r = run("train", corpus)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == "error: the loss became NaN at step 7; lower --lr"


def test_existing_run_is_kept(tmp_path, corpus):
    out = tmp_path / "run"
    assert run("train", corpus, "--out", out, "--max-steps", 2, *TINY, "--sample-length", 0).exit_code == 0
    before = (out / "last.pt").read_bytes()
    one_line_error(run("train", corpus, "--out", out, "--max-steps", 2, *TINY), "already holds a run", "--resume")
    assert (out / "last.pt").read_bytes() == before


def test_unknown_characters_in_eval(tmp_path, trained_run):
    other = tmp_path / "other.txt"
    other.write_text("Zebra crossing: ok")
    one_line_error(run("eval", trained_run[0], other), "--map-unknown")
    r = run("eval", trained_run[0], other, "--map-unknown", "--json")
    assert r.exit_code == 0
    result = json.loads(r.stdout)
    unknown = [ch for ch in other.read_text() if ch not in TEXT]  # Z, b, g
    assert result["unknown_chars"] == len(unknown) == 3 and result["chars"] == len(other.read_text()) - 3


def strict_json(text: str):
    """Parse as JSON proper: NaN and Infinity, which json.dumps writes by default, are not JSON."""
    return json.loads(text, parse_constant=lambda constant: pytest.fail(f"{constant} in --json output: {text}"))


@pytest.mark.parametrize("args, needle", [
    (["--length", "-1"], "--length"), (["--num-samples", "0"], "--num-samples"), (["--seed", "-1"], "--seed"),
    (["--temperature", "nan"], "--temperature"), (["--top-k", "0"], "--top-k"),
    (["--prime", "Zebra"], "'Z'"), (["--beam-size", "2", "--length-alpha", "nan"], "--length-alpha"),
])
def test_a_refused_sample_writes_nothing_to_stdout(trained_run, args, needle):
    r = run("sample", trained_run[0], "--prime", "hello", *args)
    one_line_error(r, needle)
    assert r.stdout == ""  # `> out.txt` keeps no half result


@pytest.mark.parametrize("seed", [-1, 2**64, 10**30])
def test_seeds_outside_64_bits_give_one_line(trained_run, seed):
    one_line_error(run("sample", trained_run[0], "--seed", seed, "--length", 5), "--seed", "2**64 - 1")


def test_the_largest_seed_samples(trained_run):
    args = ("sample", trained_run[0], "--seed", 2**64 - 1, "--length", 20, "--no-stop-at-eod")
    r = run(*args)
    assert r.exit_code == 0 and r.stdout.strip() and run(*args).stdout == r.stdout


@pytest.mark.parametrize("alpha", ["nan", "inf", "-1", "1e6"])
def test_bad_length_alpha_gives_one_line(trained_run, alpha):
    r = run("sample", trained_run[0], "--beam-size", 3, "--length-alpha", alpha)
    one_line_error(r, "--length-alpha", "0 and 10")


@pytest.mark.parametrize("temperature", ["1e-300", "1e300"])
def test_extreme_temperatures_sample_without_unk(trained_run, temperature):
    r = run("sample", trained_run[0], "--temperature", temperature, "--length", 200, "--seed", 1, "--json")
    assert r.exit_code == 0, r.output
    assert "\ufffd" not in strict_json(r.stdout)["samples"][0]


def test_every_json_output_is_strict_json(monkeypatch, trained_run, corpus):
    import charrnn.lm.evaluate
    import charrnn.lm.sample
    from charrnn.lm.evaluate import EvalResult

    assert strict_json(run("sample", trained_run[0], "--json", "--length", 10, "--num-samples", 2).stdout)
    assert strict_json(run("sample", trained_run[0], "--json", "--length", 10, "--beam-size", 2).stdout)
    assert strict_json(run("eval", trained_run[0], corpus, "--json").stdout)
    monkeypatch.setattr(charrnn.lm.sample, "beam_search", lambda *a, **k: ("abc", float("nan")))
    r = run("sample", trained_run[0], "--json", "--beam-size", 2)
    assert strict_json(r.stdout) == {"samples": ["abc"], "prime": "", "normalised_log_prob": None}
    for nats in (float("nan"), float("inf"), 800.0):  # 800 nats: a perplexity past float range, inf
        monkeypatch.setattr(charrnn.lm.evaluate, "evaluate_file", lambda *a, nats=nats, **k: EvalResult(nats, 10, 0))
        result = strict_json(run("eval", trained_run[0], corpus, "--json").stdout)
        assert result["perplexity"] is None and result["chars"] == 10


@pytest.mark.parametrize("task, command", [("caption", "charrnn caption"), ("ctc", "charrnn ctc")])
def test_another_tasks_checkpoint_gives_one_line(tmp_path, trained_run, corpus, task, command):
    from charrnn.core.checkpoint import save_checkpoint
    from charrnn.lm.model import load_model

    model, tokenizer, _ = load_model(trained_run[0])
    path = tmp_path / f"{task}.pt"
    save_checkpoint(path, model, tokenizer, task=task)
    one_line_error(run("sample", path), f"holds a '{task}' model", command)
    one_line_error(run("eval", path, corpus), f"holds a '{task}' model", command)


INTERRUPTED_IMPORT = """
import builtins, sys
real_import = builtins.__import__
def interrupted(name, *args, **kwargs):  # Ctrl-C while the CLI is still loading
    if name in ("typer", "torch"):
        raise KeyboardInterrupt
    return real_import(name, *args, **kwargs)
builtins.__import__ = interrupted
from charrnn.__main__ import main
main()
"""


def test_ctrl_c_while_importing_is_one_line_and_status_130():
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["charrnn"] == "charrnn.__main__:main"  # what the console script runs
    done = subprocess.run([sys.executable, "-c", INTERRUPTED_IMPORT], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr == "error: aborted\n" and done.stdout == "", done.stderr


SWALLOWED_CTRL_C = """
import importlib.abc, os, signal, sys
class LosesCtrlC(importlib.abc.MetaPathFinder):  # a Ctrl-C inside torch's import can be lost there, as here
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            sys.meta_path.remove(self)
            try:
                os.kill(os.getpid(), signal.SIGINT)
                sum(range(1000))  # Python runs its handler between bytecodes: here
            except KeyboardInterrupt:
                pass
        return None
sys.meta_path.insert(0, LosesCtrlC())
sys.argv = ["charrnn", "sample", sys.argv[1], "--length", "5"]
from charrnn.__main__ import main
main()
"""


def test_ctrl_c_while_torch_loads_is_not_lost(trained_run):
    import signal

    done = subprocess.run([sys.executable, "-c", SWALLOWED_CTRL_C, str(trained_run[0])], capture_output=True,
                          text=True, timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert done.returncode == 130 and done.stderr == "error: aborted\n" and done.stdout == "", done.stderr


def test_ctrl_c_in_a_command_is_one_line_and_status_130(monkeypatch, trained_run):
    import charrnn.lm.model

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(charrnn.lm.model, "load_model", interrupted)
    for args in (["sample", trained_run[0]], ["eval", trained_run[0], trained_run[1]]):
        r = run(*args)
        assert r.exit_code == 130 and r.stderr == "error: aborted\n" and r.stdout == "", r.output


def test_the_shipped_models_answer_without_a_run_directory(tmp_path):
    # A new user's first commands: nothing trained, no run directory given.
    from charrnn.core.pretrained import pretrained

    r = run("sample", "--length", 40, "--seed", 0, "--no-stop-at-eod")
    assert r.exit_code == 0 and len(r.stdout) >= 40, r.output
    text = tmp_path / "scene.txt"
    text.write_text("ROMEO:\nBut soft, what light through yonder window breaks?\n"
                    "It is the east, and Juliet is the sun.\n", encoding="utf-8")
    r = run("dump", text, "--out", tmp_path / "a.npz")
    assert r.exit_code == 0 and (tmp_path / "a.npz").exists(), r.output
    r = run("cells", text, "--html", tmp_path / "c.html", "--top", 1)
    assert r.exit_code == 0 and (tmp_path / "c.html").exists(), r.output
    r = run("viz", text, "--out", tmp_path / "v.html")
    assert r.exit_code == 0 and (tmp_path / "v.html").exists(), r.output
    assert pretrained("lm").stat().st_size < 3_000_000  # shipped models stay small


def test_version_and_shell_completion():
    from charrnn import __version__

    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"charrnn {__version__}"
    assert "--install-completion" in run("--help", env=WIDE).stdout


# ----- outputs that would destroy an input or a run's file; interrupted dumps; stdout closed or cut --------

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"


@pytest.fixture
def lm_run(tmp_path):
    """A copy of the tiny release-0.1.0 LM run directory (with a last.pt), and a short text."""
    run_dir = tmp_path / "run"
    shutil.copytree(RELEASE / "lm", run_dir)
    shutil.copy(run_dir / "best.pt", run_dir / "last.pt")
    text = tmp_path / "corpus.txt"
    text.write_text(TEXT[:300], encoding="utf-8")
    return run_dir, text


def _snapshot(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_outputs_that_would_destroy_an_input_or_a_run_file_are_refused_before_any_work(tmp_path, monkeypatch,
                                                                                        lm_run):
    import charrnn.caption.decode
    import charrnn.ctc.decode
    import charrnn.inspect.activations
    import charrnn.lm.model

    run_dir, text = lm_run
    acts = tmp_path / "acts.npz"
    assert run("dump", run_dir, text, "--out", acts).exit_code == 0
    image, line = tmp_path / "img.png", tmp_path / "line.png"
    shutil.copy(RELEASE / "images" / "1f431.png", image)
    shutil.copy(RELEASE / "lines" / "000000.png", line)
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "notes.txt").write_text("mine")

    def work(*args, **kwargs):
        raise AssertionError("the command started its work before refusing its output")

    for module, name in ((charrnn.lm.model, "load_model"), (charrnn.inspect.activations, "load_npz"),
                         (charrnn.caption.decode, "load_captioner"), (charrnn.ctc.decode, "decode_files")):
        monkeypatch.setattr(module, name, work)
    before = _snapshot(tmp_path)
    cases = [
        (["cells", run_dir, text, "--html", run_dir / "best.pt"], ".pt files are checkpoints"),
        (["viz", acts, "--out", run_dir / "last.pt"], ".pt files are checkpoints"),
        (["cells", run_dir, text, "--plot", text], "one of this command's inputs"),
        (["viz", acts, "--out", acts], "one of this command's inputs"),
        (["viz", run_dir, text, "--out", run_dir / "metrics.jsonl"], "the metrics.jsonl that the run in"),
        (["cells", acts, "--plot", run_dir / "run.json"], "the run.json that the run in"),
        (["viz", acts, "--out", tmp_path / "outdir"], "is a directory"),
        (["viz", acts, "--out", text / "x.html"], "which is a file"),
        (["cells", acts, "--html", tmp_path / "x", "--plot", tmp_path / "x"], "--html and --plot both name"),
        (["dump", run_dir, text, "--out", run_dir / "best.pt"], ".pt files are checkpoints"),
        (["dump", run_dir, text, "--format", "lstmvis", "--out", run_dir], "one of this command's inputs"),
        (["dump", run_dir, text, "--format", "lstmvis", "--out", tmp_path / "outdir"], "no part of an LSTMVis export"),
        (["dump", run_dir, text, "--format", "lstmvis", "--out", tmp_path], "one of this command's inputs"),
        (["caption", "sample", RELEASE / "caption.pt", image, "--show-attention", image], "inputs"),
        (["ctc", "decode", RELEASE / "ctc.pt", line, "--show-alignment", line], "inputs"),
        (["ctc", "decode", RELEASE / "ctc.pt", line, "--show-alignment", run_dir / "loss.svg"], "keeps"),
        (["caption", "make-emoji", tmp_path / "emoji", "--zip", tmp_path / "emoji" / "e.zip"], "into itself"),
        (["ctc", "make-lines", text, run_dir, "--overwrite"], "is a run directory"),
    ]
    for args, needle in cases:
        one_line_error(run(*args), needle)
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced


def test_outputs_are_written_whole(tmp_path, lm_run):
    run_dir, text = lm_run
    out = tmp_path / "pages"
    r = run("cells", run_dir, text, "--html", out / "c.html", "--plot", out / "sat.svg", "--top", 1)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["c.html", "sat.svg"]  # no temporary file left
    shutil.copy(RELEASE / "lines" / "000000.png", tmp_path / "line.png")
    r = run("ctc", "decode", RELEASE / "ctc.pt", tmp_path / "line.png", "--show-alignment", out / "al")
    assert r.exit_code == 0 and (out / "al").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", r.output  # any name: a PNG


def test_a_signal_during_dump_is_one_line_and_status_130(tmp_path, monkeypatch, lm_run):
    import signal

    import charrnn.inspect.activations as activations

    run_dir, text = lm_run
    out = tmp_path / "acts.npz"
    assert run("dump", run_dir, text, "--out", out).exit_code == 0
    before = out.read_bytes()
    real = activations.iter_activations

    def terminated_after_the_first_chunk(*args, **kwargs):
        for n, part in enumerate(real(*args, **kwargs)):
            if n == 1:
                signal.raise_signal(signal.SIGTERM)  # as `kill` sends it
            yield part

    monkeypatch.setattr(activations, "iter_activations", terminated_after_the_first_chunk)
    text.write_text(TEXT * 3, encoding="utf-8")  # three chunks
    for args in (["--out", out], ["--format", "lstmvis", "--out", tmp_path / "vis"]):
        r = run("dump", run_dir, text, *args)
        assert r.exit_code == 130 and r.stdout == "", r.output
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: interrupted; nothing was written to"), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acts.npz", "corpus.txt", "run"]  # no temporary file
    assert out.read_bytes() == before


def test_sigterm_to_a_dump_process_removes_its_temporary_file(tmp_path, lm_run):
    import signal
    import time

    run_dir, text = lm_run
    text.write_text(TEXT * 200, encoding="utf-8")  # about 40 s of tracing: it is stopped long before
    out = tmp_path / "acts.npz"
    proc = subprocess.Popen([sys.executable, "-m", "charrnn", "dump", str(run_dir), str(text), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".acts.npz.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and stdout == "", stderr
    assert stderr.startswith("error: interrupted") and stderr.count("\n") == 1, stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "run"]


def test_sample_with_stdout_closed_or_cut_short(lm_run):
    import os

    run_dir, _ = lm_run
    closed = subprocess.run([sys.executable, "-m", "charrnn", "sample", str(run_dir), "--length", "5"],
                            stderr=subprocess.PIPE, text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2 and closed.stderr.startswith("error: standard output is closed"), closed.stderr
    assert closed.stderr.count("\n") == 1
    # `| head -c 10`: the reader leaves early; the writer stops quietly, as Unix tools do on a closed pipe.
    cut = subprocess.run(["bash", "-c", f"{shlex.quote(sys.executable)} -m charrnn sample {shlex.quote(str(run_dir))} "
                                        "--length 200000 --no-stop-at-eod --seed 1 | head -c 10; "
                                        "exit ${PIPESTATUS[0]}"], capture_output=True, text=True, timeout=300)
    assert len(cut.stdout) == 10 and cut.stderr == "" and cut.returncode in (0, 1, 141), cut.stderr


def test_many_samples_come_a_batch_at_a_time_without_a_rule_each_in_a_file(monkeypatch, lm_run):
    import charrnn.cli.lm

    run_dir, _ = lm_run
    args = ("sample", run_dir, "--length", 4, "--seed", 3, "--no-stop-at-eod")
    two = json.loads(run(*args, "--num-samples", 2, "--json").stdout)["samples"]
    monkeypatch.setattr(charrnn.cli.lm, "SAMPLE_BATCH", 2)
    five = json.loads(run(*args, "--num-samples", 5, "--json").stdout)["samples"]
    assert len(five) == 5 and five[:2] == two  # the first batch is what one batch gives
    assert five == json.loads(run(*args, "--num-samples", 5, "--json").stdout)["samples"]  # the seed decides
    r = run(*args, "--num-samples", 5)
    # stdout is not a terminal here: no "sample k/N" rule on either stream, the texts one after another.
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == "".join(s + "\n" for s in five), r.output


@pytest.mark.parametrize("failure, said", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 40000000000 bytes. Error code 12 (Cannot allocate memory)"), " (asked for 40.0 GB)"),
    (MemoryError(), ""),
])
def test_an_allocation_failure_is_one_line_naming_the_settings_to_lower(monkeypatch, tmp_path, failure, said):
    import charrnn.caption.task

    def train(*args, **kwargs):
        raise failure

    monkeypatch.setattr(charrnn.caption.task, "train", train)
    r = run("caption", "train", "--out", tmp_path / "run", "--max-steps", 1)
    one_line_error(r, f"error: out of memory{said}: lower --batch-size, --image-size, --hidden-size or --num-layers")
    failure = RuntimeError("a bug")  # any other RuntimeError keeps its traceback
    assert run("caption", "train", "--out", tmp_path / "run", "--max-steps", 1).exception is failure


# ----- shipped models by name, the training summary's speed, progress of long evaluations (issue 20) -----

def test_shipped_models_are_named_where_a_run_directory_would_go(monkeypatch, tmp_path, corpus):
    import charrnn.ctc.decode
    from charrnn.core.pretrained import pretrained

    r = run("info", "--shipped", "--json")
    assert r.exit_code == 0, r.output
    models = {m["name"]: m for m in json.loads(r.stdout)["models"]}
    assert {"shipped:lm", "shipped:caption", "shipped:ctc"} <= set(models)
    assert models["shipped:lm"]["file"] == str(pretrained("lm")) and "language model" in models["shipped:lm"]["what"]
    assert models["shipped:ctc"]["bytes"] == pretrained("ctc").stat().st_size
    table = run("info", "--shipped")
    assert table.exit_code == 0 and "shipped:caption" in table.stdout and "caption-emoji.pt" in table.stdout
    assert json.loads(run("info", "shipped:ctc", "--json").stdout)["task"] == "ctc"
    one_line_error(run("info", "shipped"), "shipped:lm", "charrnn info --shipped")  # which one?
    one_line_error(run("info", "shipped:nope"), "'shipped:nope'", "shipped:lm")
    one_line_error(run("info"), "--shipped")
    assert json.loads(run("eval", "shipped", corpus, "--json").stdout)["chars"] > 0

    seen = {}
    monkeypatch.setattr(charrnn.ctc.decode, "decode_files", lambda checkpoint, images, **kw: seen.update(
        checkpoint=checkpoint, **kw) or {"lines": []})
    assert run("ctc", "decode", "line.png", "--lm", "shipped").exit_code == 0
    # --lm without --beam-size searches with 8 beams, as the help of --beam-size says (test_cli_help.py)
    assert seen["checkpoint"] == pretrained("ctc") and seen["fusion"].lm == str(pretrained("lm"))
    assert seen["beam_size"] == 8
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shipped").mkdir()  # a directory of that name is still the path it names
    one_line_error(run("eval", "shipped", corpus), "shipped")


def test_the_summary_shows_the_average_speed_and_the_latest(monkeypatch, corpus):
    import charrnn.lm.task

    summary = fake_summary(rate=218.0, average_rate=23_456.0)
    monkeypatch.setattr(charrnn.lm.task, "train", lambda config, on_event=None, **kw: summary)
    r = run("train", corpus, "--sample-length", 0)
    assert r.exit_code == 0, r.output
    assert re.search(r"speed +│ 23,456 chars/s on average \(lately 218\)", r.stderr), r.stderr
    assert json.loads(run("train", corpus, "--json").stdout)["average_rate"] == 23_456.0

