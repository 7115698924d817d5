"""The line reader: CTC loss against enumeration, frame bookkeeping, learning, resume, evaluation, and the CLI."""

import itertools
import math
import shutil
from pathlib import Path

import pytest
import torch

from charrnn.ctc.config import LineReaderConfig
from charrnn.ctc.model import LineReader, ctc_loss, frames


def collapse(path):
    out, previous = [], None
    for k in path:
        if k != previous and k != 0:
            out.append(k)
        previous = k
    return out


@pytest.mark.parametrize("target", [[1], [1, 2], [2, 2], [1, 2, 1]])
def test_ctc_loss_equals_the_sum_over_every_alignment(target):
    T, V = 5, 3
    log_probs = torch.randn(T, 1, V, generator=torch.Generator().manual_seed(len(target))).log_softmax(-1)
    total = sum(math.exp(sum(float(log_probs[t, 0, k]) for t, k in enumerate(path)))
                for path in itertools.product(range(V), repeat=T) if collapse(path) == target)
    loss = ctc_loss(log_probs, torch.tensor([T]), [target], reduction="sum")
    assert float(loss) == pytest.approx(-math.log(total), abs=1e-5)


def model(**kw) -> LineReader:
    torch.manual_seed(0)
    return LineReader(LineReaderConfig(vocab_size=6, height=16, channels=(4, 8, 8), hidden_size=8, **kw)).eval()


def test_frames_follow_each_lines_width_through_the_pooling():
    pixels = torch.zeros((3, 16, 103), dtype=torch.uint8)
    log_probs, lengths = model()(pixels, torch.tensor([103, 41, 7]))
    assert log_probs.shape == (103 // 4, 3, 6)
    assert lengths.tolist() == [frames(103), frames(41), frames(7)] == [25, 10, 1]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(25, 3), atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_lines_frames_do_not_depend_on_how_much_padding_follows(cell):
    # The backward direction must start at the line's own end: without packing it would first read the
    # padding, and the same line would be read differently in a batch of wider lines.
    m = model(cell=cell)
    line = torch.randint(0, 256, (1, 16, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    short = torch.nn.functional.pad(line, (0, 60))  # padded to 100 columns
    long = torch.nn.functional.pad(line, (0, 140))  # to 180
    with torch.no_grad():
        a, _ = m(short, torch.tensor([40]))
        b, _ = m(long, torch.tensor([40]))
    assert torch.allclose(a[:10], b[:10], atol=1e-5)


# ----- training, resuming, reading, scoring: on lines rendered by make-lines -------------------------

TEXT = ("the cat sat on a mat and the dog ran to the log; a bee saw the sea and the fox got a box. " * 3
        + "held out: we see a red hen in the pen and ten men at the den.")


@pytest.fixture(scope="module")
def lines(tmp_path_factory):
    from charrnn.ctc.linegen import make_lines

    root = tmp_path_factory.mktemp("lines")
    (root / "text.txt").write_text(TEXT, encoding="utf-8")
    make_lines(root / "text.txt", root / "set", count=48, val_count=8, fonts=["default"], val_fonts=["caladea"],
               min_chars=6, max_chars=14, val_frac=0.2)
    return root / "set"


def tiny(data, out, **kw):
    from charrnn.ctc.config import CTCTrainConfig

    base = dict(data=str(data), out=str(out), height=16, channels=(8, 16, 16), hidden_size=24, num_layers=1,
                batch_size=8, lr=1e-2, schedule="constant", warmup_steps=0, max_steps=4, eval_every=1000, seed=0,
                device="cpu", precision="fp32")
    return CTCTrainConfig(**{**base, **kw})


def test_overfits_a_few_lines(tmp_path, lines):
    from charrnn.ctc.data import cache_lines, read_lines
    from charrnn.ctc.decode import read_images
    from charrnn.ctc.model import load_reader

    data = read_lines(lines)
    few = data.train.subset(range(8))
    (tmp_path / "few").mkdir()
    for name in few.files:
        shutil.copy(lines / name, tmp_path / "few")
    rows = "".join(f"{Path(f).name}\t{t}\n" for f, t in zip(few.files, few.texts))
    (tmp_path / "few" / "labels.tsv").write_text(rows, encoding="utf-8")
    from charrnn.ctc.task import train

    s = train(tiny(tmp_path / "few", tmp_path / "run", height=32, channels=(16, 32, 32), hidden_size=64,
                   val_frac=0.0, max_steps=100, lr=1e-2))
    assert s.history[-1] < 0.2
    model, tok, _ = load_reader(tmp_path / "run" / "last.pt")
    images = cache_lines(read_lines(tmp_path / "few", val_frac=0.0).train, tmp_path / "cache", height=32,
                         max_width=1600, frames=frames)
    texts, _ = read_images(model, tok, images)
    assert sum(a == b for a, b in zip(texts, images.split.texts)) >= 7, texts


def test_resume_reproduces_the_uninterrupted_losses(tmp_path, lines):
    import threading

    from charrnn.ctc.task import resume_config, train

    kw = dict(max_steps=6, eval_every=3, dropout=0.1, num_layers=2)
    full = train(tiny(lines, tmp_path / "full", **kw))
    stop = threading.Event()
    part = train(tiny(lines, tmp_path / "part", **kw),
                 lambda e: stop.set() if e["kind"] == "train" and e["step"] == 4 else None, stop=stop)
    assert part.step == 4
    rest = train(resume_config(tmp_path / "part"), resume=True)
    assert part.history + rest.history == pytest.approx(full.history, abs=1e-6)
    assert rest.best == pytest.approx(full.best, abs=1e-9) and full.selection == "cer"


def test_the_iam_format_trains(tmp_path):
    from charrnn.ctc.task import train

    s = train(tiny(Path(__file__).parent / "fixtures" / "iam", tmp_path / "run", batch_size=2, max_steps=2,
                   val_frac=0.0))
    assert s.step == 2


def cli(*args):
    from typer.testing import CliRunner

    from charrnn.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_make_lines_train_decode_eval_tune(tmp_path, lines):
    import json

    from charrnn.lm.config import LMTrainConfig
    from charrnn.lm.task import train as train_lm

    r = cli("ctc", "make-lines", lines.parent / "text.txt", tmp_path / "set", "--count", 3, "--val-count", 2,
            "--fonts", "default", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["counts"] == {"train": 3, "val": 2, "val-heldout": 2}
    run = tmp_path / "run"
    r = cli("ctc", "train", lines, "--out", run, "--height", 16, "--channels", "8,16,16", "--hidden-size", 16,
            "--num-layers", 1, "--batch-size", 8, "--max-steps", 2, "--eval-every", 2, "--device", "cpu", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["selection"] == "cer" and summary["unit"] == "lines" and summary["step"] == 2
    image = lines / "val" / "000000.png"
    r = cli("ctc", "decode", run, image, "--json", "--show-alignment", tmp_path / "align.png")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["lines"][0]["image"] == str(image) and (tmp_path / "align.png").stat().st_size
    lm = tmp_path / "lm"
    train_lm(LMTrainConfig(corpus=str(lines.parent / "text.txt"), out=str(lm), hidden_size=16, num_layers=1,
                         seq_len=16, batch_size=4, max_steps=2, eval_every=2, device="cpu", precision="fp32"))
    r = cli("ctc", "eval", run, lines / "val-heldout", "--lm", lm, "--beam-size", 2, "--json")
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert scores["lines"] == 8 and set(scores) >= {"greedy", "beam", "beam_lm"}
    assert set(scores["beam_lm"]) == {"cer", "wer", "line_accuracy", "lines_per_s"}
    r = cli("ctc", "tune-lm", run, "--lm", lm, "--beam-size", 2, "--max-lines", 2, "--json")
    assert r.exit_code == 0, r.output
    tuned = json.loads(r.stdout)
    assert tuned["lines"] == 2 and tuned["best"] == tuned["grid"][0] and len(tuned["grid"]) == 20


def test_cli_errors_are_one_line(tmp_path, lines):
    r = cli("ctc", "decode", tmp_path / "nothing", lines / "val" / "000000.png")
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    r = cli("ctc", "train", tmp_path / "missing-data", "--out", tmp_path / "run", "--max-steps", 1)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    r = cli("ctc", "make-lines", tmp_path / "none.txt", tmp_path / "out", "--count", 2)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.output
    r = cli("ctc", "make-lines", lines.parent / "text.txt", tmp_path / "out", "--count", 2, "--fonts", "nosuchfont")
    assert r.exit_code == 2 and "nosuchfont" in r.stderr, r.output


def test_the_shipped_reader_reads_a_line_with_no_run_directory(lines):
    import json

    r = cli("ctc", "decode", lines / "val" / "000000.png", lines / "val" / "000001.png", "--json")
    assert r.exit_code == 0, r.output
    assert [item["image"] for item in json.loads(r.stdout)["lines"]] == [str(lines / "val" / f"00000{k}.png")
                                                                        for k in (0, 1)]


def test_resume_refuses_lines_whose_transcripts_or_images_changed(tmp_path, lines):
    import os
    import shutil

    from charrnn.core.errors import CharRNNError
    from charrnn.ctc.task import resume_config, train

    data = tmp_path / "set"
    shutil.copytree(lines, data)
    run = tmp_path / "run"
    train(tiny(data, run, max_steps=2))
    labels = data / "train" / "labels.tsv"
    original = labels.read_bytes()
    for image in (data / "train").glob("*.png"):
        os.utime(image, (1, 1))  # touched or copied, same bytes: resumes
    assert train(resume_config(run, max_steps=3), resume=True).step == 3
    first = original.decode().splitlines()[0]
    labels.write_text(original.decode().replace(first, first + "Q", 1), encoding="utf-8")
    with pytest.raises(CharRNNError, match=r"training data in .* changed since this run started \(the transcripts "
                                           r"were edited\), so resuming would train on other data"):
        train(resume_config(run, max_steps=4), resume=True)
    labels.write_bytes(original)
    image = sorted((data / "val").glob("*.png"))[0]
    shutil.copy(sorted((data / "val").glob("*.png"))[1], image)
    with pytest.raises(CharRNNError, match=r"validation data in .* \(line images were replaced or edited\)"):
        train(resume_config(run, max_steps=4), resume=True)
