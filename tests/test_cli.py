import json

import pytest
from typer.testing import CliRunner

from charrnn.cli import app

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


TINY = ["--cell", "gru", "--num-layers", "1", "--hidden-size", "32", "--embedding-dim", "8", "--batch-size", "4",
        "--seq-len", "16", "--device", "cpu"]


def test_train_then_sample_eval_info(tmp_path, corpus):
    out = tmp_path / "run"
    r = run("train", corpus, "--out", out, "--max-steps", 8, "--eval-every", 4, *TINY, "--sample-length", 40)
    assert r.exit_code == 0, r.output
    assert "training summary" in r.stderr and "best validation" in r.stderr
    assert (out / "best.pt").exists() and (out / "loss.svg").exists()

    r = run("sample", out, "--prime", "First", "--length", 30, "--seed", 3, "--no-stop-at-eod")
    assert r.exit_code == 0 and r.stdout.startswith("First") and len(r.stdout.rstrip("\n")) >= 30
    again = run("sample", out, "--prime", "First", "--length", 30, "--seed", 3, "--no-stop-at-eod")
    assert again.stdout == r.stdout

    r = run("sample", out, "--json", "--num-samples", 3, "--length", 20, "--seed", 1, "--top-k", 5, "--top-p", 0.9)
    assert r.exit_code == 0 and len(json.loads(r.stdout)["samples"]) == 3

    r = run("sample", out, "--beam-size", 3, "--length", 20, "--prime", "All:")
    assert r.exit_code == 0 and r.stdout.startswith("All:")

    r = run("eval", out, corpus, "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert {"nats_per_char", "bits_per_char", "perplexity", "chars"} <= res.keys() and res["chars"] == len(corpus.read_text())

    r = run("info", out, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["step"] == 8
    assert run("info", out).exit_code == 0

    r = run("train", "--resume", out, "--max-steps", 10, "--sample-length", 0)
    assert r.exit_code == 0, r.output
    assert json.loads(run("info", out / "last.pt", "--json").stdout)["step"] == 10


def test_help_lists_every_command():
    r = run("--help")
    assert r.exit_code == 0
    for cmd in ("train", "sample", "eval", "info"):
        assert cmd in r.stdout
    assert "--document-separator" in run("train", "--help").stdout


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
    one_line_error(run("train", corpus, "--out", out, "--cell", "transformer"), "--cell")
    one_line_error(run("train", corpus, "--out", out, "--batch-size", "many"), "--batch-size")
    one_line_error(run("train", corpus, "--out", out, "--lr", "-1"), "--lr")
    one_line_error(run("train", "--resume", tmp_path / "nothing"), "no such run directory")
    one_line_error(run("train", "--resume", trained_run[0], "--hidden-size", 64), "cannot change when resuming")
    one_line_error(run("sample", tmp_path / "missing.pt"), "no such checkpoint")
    one_line_error(run("sample", trained_run[0], "--prime", "Zebra"), "'Z'", "--map-unknown")
    one_line_error(run("sample", trained_run[0], "--temperature", "-1"), "--temperature")
    one_line_error(run("sample", trained_run[0], "--top-p", "1.5"), "--top-p")
    one_line_error(run("sample", corpus), "not a charrnn checkpoint")
    one_line_error(run("eval", trained_run[0], tmp_path / "missing.txt"), "no such file")
    one_line_error(run("frobnicate"), "No such command")


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
    assert r.exit_code == 0 and json.loads(r.stdout)["unknown_chars"] > 0
