"""Translation end to end: training on each data format, exact resume, and the command line (train, run, eval)."""

import json

import pytest
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.checkpoint import checkpoint_info
from charrnn.translate.config import TranslateTrainConfig
from charrnn.translate.task import resume_config, train

runner = CliRunner()
WORDS = {"cat": "K AE T", "dog": "D AO G", "ox": "AA K S", "tax": "T AE K S", "go": "G OW", "cod": "K AA D",
         "tag": "T AE G", "oat": "OW T", "cot": "K AA T", "toad": "T OW D", "act": "AE K T", "goat": "G OW T"}
SMALL = dict(hidden_size=32, embedding_dim=16, attention_dim=16, batch_size=4, lr=0.02, warmup_steps=0,
             schedule="constant", val_frac=0.0, test_frac=0.0, eval_every=1000)


def write_tsv(path, rows=WORDS, extra=False):
    path.write_text("".join(f"{s}\t{t}" + ("\tCC-BY 2.0 (FR) Attribution" if extra else "") + "\n"
                            for s, t in rows.items()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A translator trained by heart on 12 words (spelling -> phones)."""
    tmp = tmp_path_factory.mktemp("translate")
    data = write_tsv(tmp / "words.tsv")
    summary = train(TranslateTrainConfig(data=str(data), out=str(tmp / "run"), target_tokens="words",
                                         max_steps=200, **SMALL))
    assert summary.train_loss < 0.1
    return tmp / "run"


def test_trains_exact_resume_and_the_split_by_source(tmp_path):
    data = write_tsv(tmp_path / "words.tsv", extra=True)  # a third column (Tatoeba's attribution) is ignored
    settings = dict(SMALL, data=str(data), target_tokens="words", val_frac=0.25, eval_every=5)
    a = train(TranslateTrainConfig(out=str(tmp_path / "a"), max_steps=10, **settings))
    train(TranslateTrainConfig(out=str(tmp_path / "b"), max_steps=5, **settings))
    b = train(resume_config(tmp_path / "b", max_steps=10), resume=True)
    assert b.val_loss == a.val_loss and b.best == a.best and b.selection == "token_error_rate"
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["target_tokens"] == "words" and run["data"] == str(data.resolve())


def test_aligned_files_and_character_targets(tmp_path):
    (tmp_path / "train.en").write_text("".join(f"{s}\n" for s in WORDS), encoding="utf-8")
    (tmp_path / "train.up").write_text("".join(f"{s.upper()}\n" for s in WORDS), encoding="utf-8")
    summary = train(TranslateTrainConfig(source=str(tmp_path / "train.en"), target=str(tmp_path / "train.up"),
                                         out=str(tmp_path / "up"), max_steps=3, **SMALL))
    assert summary.step == 3
    info = checkpoint_info(tmp_path / "up" / "last.pt")
    assert info["task"] == "translate" and info["tokens"] == "char -> char" and "G" in info["vocabulary"]


def test_run_greedy_beam_n_best_json_and_attention(run, tmp_path):
    r = runner.invoke(app, ["translate", "run", str(run), "goat", "Tax"])  # read lower-cased: the data has no capitals
    assert r.exit_code == 0, r.output
    assert r.stdout == "goat\tG OW T\nTax\tT AE K S\n"
    r = runner.invoke(app, ["translate", "run", str(run), "cat", "--beam-size", "3", "--n-best", "2", "--json",
                            "--show-attention", str(tmp_path / "att.png")])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)["translations"][0]
    best, second = out["n_best"]
    assert out["output"] == best["output"] == "K AE T" and best["score"] >= second["score"]
    assert (tmp_path / "att.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["translate", "run", str(run)], input="dog\nact\n")  # stdin, a line each
    assert r.exit_code == 0 and r.stdout == "dog\tD AO G\nact\tAE K T\n", r.output


def test_eval_greedy_and_beam_side_by_side(run, tmp_path):
    data = write_tsv(tmp_path / "more.tsv", {**WORDS, "cat": "K AE T", "dog": "D AA G"})  # a second listed reading
    (tmp_path / "more.tsv").write_text((tmp_path / "more.tsv").read_text() + "dog\tD AO G\n", encoding="utf-8")
    r = runner.invoke(app, ["translate", "eval", str(run), str(data), "--beam-size", "3", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["pairs"] == 13 and result["sources"] == 12
    for name in ("greedy", "beam 3"):
        scores = result["decodings"][name]
        assert scores["exact_match"] == 1.0 and scores["token_error_rate"] == 0.0  # D AO G is one of dog's readings
    r = runner.invoke(app, ["translate", "eval", str(run), str(data)])
    assert r.exit_code == 0 and "exact match" in r.stdout and "beam 5" in r.stdout, r.output


@pytest.mark.parametrize("args, said", [
    (["run", "RUN", "cat", "--n-best", "3"], "--beam-size 3"),
    (["run", "RUN", ""], "empty text"),
    (["run", "RUN", "cat", "--show-attention", "RUN/best.pt"], "--show-attention"),
    (["eval", "RUN", "--part", "test"], "held out no test pairs"),
    (["eval", "RUN", "missing.tsv"], "missing.tsv"),
    (["train", "DATA", "--source", "a.txt", "--target", "b.txt"], "not both"),
    (["train", "DATA", "--source", "a.txt"], "give both"),
    (["train", "DATA", "--hidden-size", "33"], "even"),
    (["train", "--resume", "RUN", "--source", "a.txt", "--target", "b.txt"], "drop DATA, --source, --target"),
    (["train", "DATA", "--source-column", "2", "--target-column", "2"], "two different columns"),
])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, monkeypatch, args, said):
    monkeypatch.chdir(tmp_path)
    data = write_tsv(tmp_path / "w.tsv")
    args = [str(run) if a == "RUN" else str(data) if a == "DATA" else a.replace("RUN", str(run)) for a in args]
    r = runner.invoke(app, ["translate", *args])
    assert r.exit_code == 2 and said in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


def test_bad_rows_are_named_by_file_and_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.tsv").write_text("cat\tK AE T\ndog\n\tG OW\nox\tAA K S\n", encoding="utf-8")
    r = runner.invoke(app, ["translate", "train", "bad.tsv", "--max-steps", "1"])
    assert r.exit_code == 2 and "bad.tsv line 2" in r.stderr and "bad.tsv line 3" in r.stderr, r.output
    assert not (tmp_path / "checkpoints" / "bad-translate").exists()
