"""--newline keep|lf: CRLF and lone CR line ends read as LF (or not) when a corpus is encoded, remembered by the
run, and applied to the text that eval, dump and sample give the model."""

import json
import os

import numpy as np
import pytest
from conftest import TEXT, tiny_config
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.checkpoint import atomic_save, load_checkpoint
from charrnn.core.errors import CharRNNError
from charrnn.core.text import iter_text, normalize_newlines
from charrnn.lm.data import cached_corpus, encode_corpus
from charrnn.lm.evaluate import evaluate_file
from charrnn.lm.model import load_model
from charrnn.lm.task import resume_config, train, trained_newline

CRLF_TEXT = TEXT.replace("\n", "\r\n").replace("Speak, speak.\r\n", "Speak, speak.\r")  # CRLF and a few lone CRs
runner = CliRunner()


@pytest.fixture
def crlf_corpus(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(CRLF_TEXT.encode("utf-8"))
    return path


def test_normalize_newlines():
    assert normalize_newlines("a\r\nb\rc\nd\r\r\n", "lf") == "a\nb\nc\nd\n\n"
    assert normalize_newlines(b"a\r\nb\r", "lf") == b"a\nb\n"
    assert normalize_newlines("a\r\nb\r", "keep") == "a\r\nb\r"


def test_a_crlf_split_across_chunks_is_one_newline(crlf_corpus):
    for chunk in (1, 2, 3, 7):
        assert "".join(iter_text(crlf_corpus, chunk_bytes=chunk, newline="lf")) == TEXT
        assert b"".join(iter_text(crlf_corpus, byte_level=True, chunk_bytes=chunk, newline="lf")) == TEXT.encode()


def test_lf_run_has_no_carriage_return_and_keep_keeps_it(tmp_path, crlf_corpus):
    lf = train(tiny_config(crlf_corpus, tmp_path / "lf", max_steps=2, newline="lf"))
    keep = train(tiny_config(crlf_corpus, tmp_path / "keep", max_steps=2, newline="keep"))
    _, lf_tok, lf_ckpt = load_model(lf.run_dir)
    _, keep_tok, keep_ckpt = load_model(keep.run_dir)
    assert ord("\r") not in lf_tok.codes and ord("\r") in keep_tok.codes
    assert trained_newline(lf_ckpt) == "lf" and trained_newline(keep_ckpt) == "keep"
    assert json.loads((tmp_path / "lf" / "run.json").read_text())["newline"] == "lf"
    assert lf_tok.decode(np.asarray(cached_corpus(tmp_path / "lf", newline="lf").ids)[1:]) == TEXT


def test_switching_the_setting_encodes_again(tmp_path, crlf_corpus):
    keep = encode_corpus(crlf_corpus, tmp_path, newline="keep")
    lf = encode_corpus(crlf_corpus, tmp_path, newline="lf")
    assert not lf.reused and len(lf.ids) < len(keep.ids)
    assert encode_corpus(crlf_corpus, tmp_path, newline="lf").reused
    assert not encode_corpus(crlf_corpus, tmp_path, newline="keep").reused


def test_document_separator_is_read_with_the_line_ends(tmp_path, crlf_corpus):
    corpus = encode_corpus(crlf_corpus, tmp_path, newline="lf", document_separator="\r\n\r\n")
    assert corpus.tokenizer.document_separator == "\n\n"
    assert int((np.asarray(corpus.ids) == corpus.tokenizer.eod_id).sum()) == 1 + TEXT.count("\n\n")


def test_resume_sees_the_normalised_text(tmp_path, crlf_corpus):
    """A run reads the corpus as normalised text: turning its CRLFs into LFs is no change, editing a word is."""
    run = tmp_path / "run"
    train(tiny_config(crlf_corpus, run, max_steps=2, newline="lf"))
    os.utime(crlf_corpus, ns=(0, 0))  # touched: its text is compared with the run's again
    assert train(resume_config(run, max_steps=3), resume=True).step == 3
    crlf_corpus.write_bytes(TEXT.encode("utf-8"))  # the same text once line ends are read as LF
    assert train(resume_config(run, max_steps=4), resume=True).step == 4
    crlf_corpus.write_bytes(TEXT.replace("famish", "fanish").encode("utf-8"))
    with pytest.raises(CharRNNError, match="has changed since this run started"):
        train(resume_config(run, max_steps=5), resume=True)


def test_a_run_from_before_the_option_resumes_keeping_its_line_ends(tmp_path, crlf_corpus):
    run = tmp_path / "run"
    train(tiny_config(crlf_corpus, run, max_steps=2, newline="keep"))
    for name in ("last.pt", "best.pt"):  # what a run written before --newline existed holds
        ckpt = load_checkpoint(run / name)
        del ckpt["meta"]["train_config"]["newline"]
        atomic_save(ckpt, run / name)
    for name, key in (("run.json", None), ("corpus.json", "settings")):
        saved = json.loads((run / name).read_text())
        del (saved[key] if key else saved)["newline"]
        (run / name).write_text(json.dumps(saved))
    assert cached_corpus(run, newline="keep") is not None  # its encoded copy is still recognised
    summary = train(resume_config(run, max_steps=3), resume=True)
    assert summary.step == 3
    assert json.loads((run / "run.json").read_text())["newline"] == "keep"


def test_eval_dump_and_sample_read_text_as_the_corpus_was(tmp_path, crlf_corpus):
    run = tmp_path / "run"
    train(tiny_config(crlf_corpus, run, max_steps=2, newline="lf"))
    lf_file = tmp_path / "lf.txt"
    lf_file.write_text(TEXT, encoding="utf-8")
    model, tok, _ = load_model(run)
    # Without the normalisation the model could not read the CRLF file at all (it never saw a \r).
    with pytest.raises(CharRNNError, match="not in the model's vocabulary"):
        evaluate_file(model, tok, crlf_corpus)
    scores = [json.loads(runner.invoke(app, ["eval", str(run), str(f), "--json", "--device", "cpu"]).stdout)
              for f in (crlf_corpus, lf_file)]
    assert scores[0] == scores[1]
    dumped = runner.invoke(app, ["dump", str(run), "--text", "First\\r\\nCitizen:\\r", "--out", str(tmp_path / "a.npz"),
                                 "--device", "cpu", "--json"])
    assert dumped.exit_code == 0, dumped.output
    assert json.loads(dumped.stdout)["chars"] == len("First\nCitizen:\n")
    sampled = runner.invoke(app, ["sample", str(run), "--prime", "All:\\r\\n", "--length", "5", "--seed", "0",
                                  "--json", "--device", "cpu"])
    assert sampled.exit_code == 0, sampled.output
    assert json.loads(sampled.stdout)["prime"] == "All:\n"
