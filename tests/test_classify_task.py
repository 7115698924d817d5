"""charrnn classify: the model's contract, the data formats, training, resume and the commands."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from charrnn.classify.config import ClassifierConfig, ClassifyTrainConfig
from charrnn.classify.data import read_classify_data, stratified_split
from charrnn.classify.model import Classifier
from charrnn.classify.task import resume_config, train
from charrnn.cli import app
from charrnn.core.batches import pad
from charrnn.core.errors import CharRNNError

LABELS = ("de", "en", "it")
NAMES = {"de": ["Schmidt", "Müller", "Schneider", "Fischer", "Weber", "Wagner", "Becker", "Hoffmann"],
         "en": ["Smith", "Johnson", "Williams", "Brown", "Jones", "Taylor", "Wilson", "Davies"],
         "it": ["Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci"]}


def tiny(**kw) -> Classifier:
    config = dict(vocab_size=30, labels=LABELS, hidden_size=8, embedding_dim=4)
    torch.manual_seed(0)
    return Classifier(ClassifierConfig(**{**config, **kw})).eval()


@pytest.fixture
def tsv(tmp_path):
    path = tmp_path / "names.tsv"
    path.write_text("".join(f"{label}\t{n}\n" for label, names in NAMES.items() for n in names), encoding="utf-8")
    return path


@pytest.mark.parametrize("pool", ["last", "mean", "max", "attention"])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_padding_never_changes_a_texts_result(cell, bidirectional, pool):
    model = tiny(cell=cell, bidirectional=bidirectional, pool=pool, num_layers=2)
    rows = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 1], [2]]
    ids, lengths = pad(rows, pad_id=0)
    together = model(ids, lengths)
    for k, row in enumerate(rows):
        alone = model(*pad([row], pad_id=0))
        assert torch.allclose(together[k], alone[0], atol=1e-5), (cell, bidirectional, pool, k)
    other, _ = pad(rows, pad_id=29)  # what the padding holds does not matter either
    assert torch.allclose(model(other, lengths), together, atol=1e-5)


def test_shapes_and_loss_at_init_is_ln_k():
    model = tiny(hidden_size=32)
    ids, lengths = pad([[1, 2, 3, 4]] * 64, pad_id=0)
    logits = model(ids, lengths)
    assert logits.shape == (64, len(LABELS))
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(64, dtype=torch.long))
    assert abs(loss.item() - math.log(len(LABELS))) < 0.3


def test_each_format_reads_the_same_examples(tmp_path, tsv):
    rows = [(label, n) for label, names in NAMES.items() for n in names]
    (tmp_path / "names.csv").write_text("id,name,lang\n" + "".join(f"{k},\"{n}\",{label}\n" for k, (label, n)
                                                                   in enumerate(rows)), encoding="utf-8")
    (tmp_path / "names.ft").write_text("".join(f"__label__{label} {n}\n" for label, n in rows), encoding="utf-8")
    (tmp_path / "dir").mkdir()
    for label, names in NAMES.items():
        (tmp_path / "dir" / f"{label}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
    expected = sorted(rows)
    for path, kw in ((tsv, {}), (tmp_path / "names.csv", dict(text_column="name", label_column="lang")),
                     (tmp_path / "names.ft", {}), (tmp_path / "dir", {})):
        data = read_classify_data(path, val_frac=0.0, **kw)
        assert sorted(zip(data.train.labels, data.train.texts)) == expected, path
        assert data.labels == LABELS


def test_bad_rows_name_their_file_and_line(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"de\tSchmidt\nno tab here\nen\t\nit\tRossi\n\xff\nde\tWeber\nen\tSmith\n")
    with pytest.raises(CharRNNError, match=r"3 bad rows: bad.tsv line 2: no TAB.*bad.tsv line 3: empty text"):
        read_classify_data(path, val_frac=0.0)
    data = read_classify_data(path, val_frac=0.0, skip_bad=True)
    assert len(data.skipped) == 5  # the three bad rows, then "it" and "en", left with one example each
    assert data.labels == ("de",) and data.train.texts == ["Schmidt", "Weber"]
    csv = tmp_path / "x.csv"
    csv.write_text("text,label\nhello,a\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match="no column 'lang'"):
        read_classify_data(csv, label_column="lang")
    ft = tmp_path / "x.ft"
    ft.write_text("__label__a __label__b two labels\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match="line 1: 2 labels"):
        read_classify_data(ft)


def test_a_label_with_one_example_is_reported(tmp_path, tsv):
    with open(tsv, "a", encoding="utf-8") as f:
        f.write("fr\tDupont\n")
    with pytest.raises(CharRNNError, match="1 labels of .* have a single example: 'fr'"):
        read_classify_data(tsv)


def test_the_split_is_stratified_seeded_and_disjoint():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    train, val, test = stratified_split(labels, (0.1, 0.2), seed=3)
    assert sorted(train + val + test) == list(range(100))
    assert [labels[i] for i in val].count("a") == 5 and [labels[i] for i in test].count("c") == 4
    assert stratified_split(labels, (0.1, 0.2), seed=3) == [train, val, test]


def config(tsv, tmp_path, **kw) -> ClassifyTrainConfig:
    settings = dict(data=str(tsv), out=str(tmp_path / "run"), hidden_size=16, embedding_dim=8, batch_size=4,
                    val_frac=0.25, test_frac=0.0, eval_every=10, lr=0.03, warmup_steps=0, seed=0)
    return ClassifyTrainConfig(**{**settings, **kw})


def test_overfits_a_tiny_set_and_resumes_exactly(tsv, tmp_path):
    summary = train(config(tsv, tmp_path, max_steps=80, val_frac=0.0, schedule="constant"))
    assert summary.train_loss < 0.5 * math.log(3)
    a = train(config(tsv, tmp_path, out=str(tmp_path / "a"), max_steps=12, schedule="constant"))
    train(config(tsv, tmp_path, out=str(tmp_path / "b"), max_steps=6, schedule="constant"))
    b = train(resume_config(tmp_path / "b", max_steps=12), resume=True)
    la = [json.loads(x)["loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
          if json.loads(x)["kind"] == "train"]
    lb = [json.loads(x)["loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
          if json.loads(x)["kind"] == "train"]
    assert la == lb and a.val_loss == b.val_loss


def test_init_from_a_language_model(tsv, tmp_path):
    from charrnn.lm.config import LMTrainConfig
    from charrnn.lm.task import train as train_lm

    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(n for names in NAMES.values() for n in names) * 20, encoding="utf-8")
    train_lm(LMTrainConfig(corpus=str(corpus), out=str(tmp_path / "lm"), hidden_size=16, embedding_dim=8,
                           num_layers=1, max_steps=3, seq_len=16, batch_size=4, eval_streams=2))
    with pytest.raises(CharRNNError, match="--hidden-size 16"):
        train(config(tsv, tmp_path, init_from=str(tmp_path / "lm"), hidden_size=32, max_steps=2))
    train(config(tsv, tmp_path, init_from=str(tmp_path / "lm"), freeze=True, bidirectional=False, max_steps=2))
    lm = torch.load(tmp_path / "lm" / "best.pt", weights_only=True)["model_state"]
    clf = torch.load(tmp_path / "run" / "best.pt", weights_only=True)["model_state"]
    assert torch.equal(lm["rnn.weight_hh_l0"], clf["encoder.rnn.weight_hh_l0"])  # frozen: unchanged
    assert torch.equal(lm["embedding.weight"], clf["encoder.embedding.weight"])


def test_commands(tsv, tmp_path):
    runner = CliRunner()
    run = str(tmp_path / "run")
    r = runner.invoke(app, ["classify", "train", str(tsv), "--out", run, "--max-steps", "4", "--hidden-size", "8",
                            "--batch-size", "4", "--val-frac", "0.25", "--test-frac", "0.25"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["classify", "predict", run, "Schmidt", "Rossi", "--top-k", "2", "--json"])
    assert r.exit_code == 0, r.output
    predictions = json.loads(r.stdout)["predictions"]
    assert [p["text"] for p in predictions] == ["Schmidt", "Rossi"] and len(predictions[0]["top"]) == 2
    r = runner.invoke(app, ["classify", "predict", run], input="Weber\nSmith\n")
    assert r.exit_code == 0 and [line.split("\t")[0] for line in r.stdout.splitlines()] == ["Weber", "Smith"]
    (tmp_path / "names.txt").write_text("Weber\n\nSmith\r\n", encoding="utf-8")
    r = runner.invoke(app, ["classify", "predict", run, "--file", str(tmp_path / "names.txt")])
    assert r.exit_code == 0 and [line.split("\t")[0] for line in r.stdout.splitlines()] == ["Weber", "Smith"]
    r = runner.invoke(app, ["classify", "predict", run, "Weber", "--file", str(tmp_path / "names.txt")])
    assert r.exit_code == 2 and "not both" in r.stderr
    r = runner.invoke(app, ["classify", "eval", run, "--json", "--confusion", str(tmp_path / "c.svg")])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert 0 <= scores["accuracy"] <= 1 and np.array(scores["confusion"]).sum() == scores["examples"]
    assert (tmp_path / "c.svg").read_text().startswith("<svg")
    r = runner.invoke(app, ["classify", "trace", run, "Schmidt", "--json", "--svg", str(tmp_path / "t.svg")])
    assert r.exit_code == 0, r.output
    assert np.array(json.loads(r.stdout)["probabilities"]).shape == (7, 3)
    r = runner.invoke(app, ["classify", "train", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "no such data set" in r.stderr and "Traceback" not in r.output


def test_cells_finds_the_unit_that_tracks_the_label(tsv, tmp_path):
    """`charrnn cells` on a classify run ranks single units by how well one threshold tells a label apart."""
    train(config(tsv, tmp_path, max_steps=60, val_frac=0.0, schedule="constant", bidirectional=False, pool="last"))
    r = CliRunner().invoke(app, ["cells", str(tmp_path / "run"), str(tsv), "--top", "2", "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    assert result["units"] == 16 and set(result["labels"]) == set(LABELS)
    for units in result["labels"].values():
        assert len(units) == 2 and units[0]["accuracy"] >= units[1]["accuracy"]
        assert units[0]["accuracy"] > units[0]["base_rate"]  # a trained model has units that carry the label


def test_threshold_accuracy_against_a_brute_force():
    from charrnn.classify.units import threshold_accuracies

    rng = np.random.default_rng(0)
    values, positive = rng.normal(size=(40, 3)), rng.random(40) < 0.3
    for d in range(3):
        best = max(max(np.mean((values[:, d] > t) == positive), np.mean((values[:, d] > t) != positive))
                   for t in [-np.inf, *values[:, d]])
        assert threshold_accuracies(values, positive)[d] == pytest.approx(best)
