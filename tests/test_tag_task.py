"""charrnn tag: truecasing derived from any text, text<TAB>tags files, the tagger's contract, the commands."""

import json

import pytest
import torch
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.batches import pad
from charrnn.core.errors import CharRNNError
from charrnn.tag.config import TaggerConfig, TagTrainConfig
from charrnn.tag.data import case_data, cut_pieces, lower_and_case_tags, restore_case, tsv_data
from charrnn.tag.evaluate import capitalised_word_f1
from charrnn.tag.model import Tagger
from charrnn.tag.task import resume_config, train

TEXT = ("Prince Andrew looked at Natasha. She smiled, and Pierre said: \"Moscow is burning.\"\n"
        "The Count went to Petersburg in March; Denisov stayed.\n") * 30


def test_case_tags_round_trip():
    lowered, tags = lower_and_case_tags("Hello World, İstanbul ÀB")
    assert lowered == "hello world, İstanbul àb"  # İ has no one-character lower case: kept as it is
    assert tags == "U-----U---------------UU"
    assert restore_case(lowered, tags) == "Hello World, İstanbul ÀB"


def test_pieces_cover_the_text_and_end_at_spaces():
    pieces = cut_pieces(TEXT, 64)
    assert "".join(pieces) == TEXT and all(len(p) <= 64 for p in pieces)
    assert all(p[-1] in " \n" for p in pieces[:-1])


def test_case_data_is_split_by_position(tmp_path):
    path = tmp_path / "wp.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode("utf-8"))
    data = case_data(path, max_chars=64, val_frac=0.1, test_frac=0.2)
    whole = "".join(data.train.texts + data.val.texts + data.test.texts)
    assert whole == TEXT.lower()  # BOM dropped, CRLF read as LF, nothing lost or reordered
    assert abs(len("".join(data.test.texts)) - 0.2 * len(TEXT)) < 64
    path.write_text("all lower case\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match="no upper-case letters"):
        case_data(path, max_chars=64, val_frac=0.1, test_frac=0.1)


def test_tsv_rows_are_checked_by_line(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_text("abc\tBIO\nabcd\tBI\nno tab\nxy\tOO\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match=r"2 bad rows: t.tsv line 2: 2 tags for 4 characters.*line 3: no TAB"):
        tsv_data(path, max_chars=100, val_frac=0.0, test_frac=0.0)
    data = tsv_data(path, max_chars=100, val_frac=0.0, test_frac=0.0, skip_bad=True)
    assert data.tags == ("B", "I", "O") and sorted(data.train.texts) == ["abc", "xy"]


@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_a_texts_tags(bidirectional):
    torch.manual_seed(0)
    model = Tagger(TaggerConfig(vocab_size=20, tags=("-", "U"), hidden_size=8, embedding_dim=4,
                                bidirectional=bidirectional)).eval()
    rows = [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11, 12, 13, 14]]
    ids, lengths = pad(rows, 0)
    together = model(ids, lengths)
    for k, row in enumerate(rows):
        assert torch.allclose(together[k, : len(row)], model(*pad([row], 0))[0], atol=1e-5)


def test_capitalised_word_f1():
    text = "paris is in france, said anna."
    truth = lower_and_case_tags("Paris is in France, said Anna.")[1]
    guess = lower_and_case_tags("Paris is In france, said Anna.")[1]
    scores = capitalised_word_f1([text], [truth], [guess])
    assert scores["capitalised_words"] == 3 and scores["precision"] == 2 / 3 and scores["recall"] == 2 / 3


def test_learns_to_capitalise_and_resumes(tmp_path):
    corpus = tmp_path / "wp.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    settings = dict(data=str(corpus), hidden_size=16, embedding_dim=8, num_layers=1, batch_size=8, max_chars=48,
                    val_frac=0.1, test_frac=0.1, eval_every=100, lr=0.02, warmup_steps=0, schedule="constant")
    summary = train(TagTrainConfig(out=str(tmp_path / "a"), max_steps=120, **settings))
    assert summary.best > 0.8  # the F1 of the capitalised words: the same few names recur
    train(TagTrainConfig(out=str(tmp_path / "b"), max_steps=60, **settings))
    b = train(resume_config(tmp_path / "b", max_steps=120), resume=True)
    assert b.val_loss == summary.val_loss

    runner = CliRunner()
    r = runner.invoke(app, ["tag", "predict", str(tmp_path / "a"), "prince andrew looked at natasha."])
    assert r.exit_code == 0 and r.stdout.strip() == "Prince Andrew looked at Natasha.", r.output
    r = runner.invoke(app, ["tag", "eval", str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert scores["words"]["f1"] > 0.8 and set(scores["per_tag"]) == {"-", "U"}
    r = runner.invoke(app, ["tag", "predict", str(tmp_path / "a")], input="the count went\n")
    assert r.exit_code == 0 and r.stdout == "The Count went\n"
