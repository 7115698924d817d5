"""Checkpoints written by release 0.1.0 (before the one-package-per-task layout) give the same outputs.

`tests/fixtures/release-0.1.0/` holds one tiny model per task, trained by that release, the inputs used
below, and `expected.json`: what that release's code gave for them. `outputs()` computes the same things with
today's code. Remake the fixtures only on purpose (a deliberate change of outputs), with
`python tests/test_release_fixtures.py`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "release-0.1.0"
CAPTION_IMAGES = ("1f431.png", "1f436.png")
HAMLET = "HAMLET:\nTo be, or not to be, that is the question.\n"


def outputs(fixtures: Path) -> dict:
    """Everything the fixtures' models give: eval numbers, seeded samples, captions, line readings."""
    from charrnn.caption.decode import describe_images
    from charrnn.caption.evaluate import evaluate_captioner
    from charrnn.ctc.decode import Fusion, decode_files
    from charrnn.ctc.evaluate import evaluate_reader
    from charrnn.lm.evaluate import evaluate_file
    from charrnn.lm.model import load_model
    from charrnn.lm.sample import SampleSettings, beam_search, sample

    lm_ckpt = fixtures / "lm" / "best.pt"
    model, tokenizer, _ = load_model(lm_ckpt)
    result = evaluate_file(model, tokenizer, fixtures / "hamlet.txt")
    lm = {
        "eval_nats": result.nats_per_char,
        "eval_unknown": result.unknown_chars,
        "eval_chars": result.chars,
        "sample": sample(model, tokenizer, prime="ROMEO:", length=80,
                         settings=SampleSettings(temperature=0.8, top_k=20), seed=0, stop_at_eod=False)[0],
        "greedy": sample(model, tokenizer, prime="JULIET:", length=40,
                         settings=SampleSettings(temperature=0.0), seed=0, stop_at_eod=False)[0],
        "beam": list(beam_search(model, tokenizer, prime="JULIET:", length=30, beam_size=4)),
    }
    images = [fixtures / "images" / name for name in CAPTION_IMAGES]
    caption_ckpt = fixtures / "caption.pt"
    scores = evaluate_captioner(caption_ckpt, str(fixtures / "captions"), part="all", beam_size=3, device="cpu")
    caption = {
        "greedy": describe_images(caption_ckpt, images, device="cpu")["images"],
        "beam": describe_images(caption_ckpt, images, beam_size=3, device="cpu")["images"],
        "eval": {k: scores[k] for k in ("images", "references", "greedy", "beam")},
    }
    lines = sorted((fixtures / "lines").glob("*.png"))
    reader = fixtures / "ctc.pt"
    fusion = Fusion(str(lm_ckpt), lm_weight=0.5, char_bonus=1.0, lm_unknown="floor")
    ctc_scores = evaluate_reader(reader, str(fixtures / "lines"), beam_size=4, fusion=fusion, device="cpu")
    ctc = {
        "greedy": decode_files(reader, lines, device="cpu")["lines"],
        "beam": decode_files(reader, lines, beam_size=4, device="cpu")["lines"],
        "beam_lm": decode_files(reader, lines, beam_size=4, fusion=fusion, device="cpu")["lines"],
        "eval": {"ctc_loss": ctc_scores["ctc_loss"],
                 **{k: {m: v for m, v in ctc_scores[k].items() if m != "lines_per_s"}
                    for k in ("greedy", "beam", "beam_lm")}},
    }
    relative = lambda d: json.loads(json.dumps(d).replace(str(fixtures) + "/", ""))  # noqa: E731
    return relative({"lm": lm, "caption": caption, "ctc": ctc})


def _close(a, b, path="") -> None:
    """Equal, floats to 1e-6 relative (the reference runs' tolerance), everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9), f"{path}: {a} != {b}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: {a} != {b}"
        for k, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{k}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def today(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("release") / "fixtures"
    shutil.copytree(FIXTURES, work)  # loading a run must not write into the repository
    return outputs(work)


@pytest.mark.parametrize("task", ["lm", "caption", "ctc"])
def test_release_checkpoints_give_the_same_outputs(today, task):
    expected = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
    _close(today[task], expected[task], task)


def make_fixtures(out: Path) -> None:
    """Train the three tiny models with this release and record what they give."""
    from charrnn.caption.config import CaptionTrainConfig
    from charrnn.caption.task import train as train_captioner
    from charrnn.ctc.config import CTCTrainConfig
    from charrnn.ctc.linegen import make_lines
    from charrnn.ctc.task import train as train_reader
    from charrnn.lm.config import LMTrainConfig
    from charrnn.lm.task import train as train_lm

    if out.exists():
        shutil.rmtree(out)
    (out / "images").mkdir(parents=True)
    (out / "hamlet.txt").write_text(HAMLET, encoding="utf-8")
    train_lm(LMTrainConfig(corpus=str(ROOT / "corpora/tinyshakespeare.txt"), out=str(out / "lm"), cell="lstm",
                         num_layers=1, hidden_size=24, embedding_dim=8, batch_size=8, seq_len=32, max_steps=150,
                         eval_every=75, eval_streams=2, val_frac=0.001))
    for name in ("corpus.bin", "corpus.json", "last.pt"):  # the run's cache, which it rebuilds on resume
        (out / "lm" / name).unlink(missing_ok=True)

    emoji = zipfile.ZipFile(ROOT / "corpora/emoji.zip")
    rows = [line.split("\t") for line in emoji.read("captions.tsv").decode("utf-8").splitlines()]
    names = sorted({row[0] for row in rows})[:40]
    (out / "captions" / "images").mkdir(parents=True)
    for name in names:
        (out / "captions" / name).write_bytes(emoji.read(name))
    (out / "captions" / "captions.tsv").write_text(
        "".join(f"{n}\t{c}\n" for n, c in rows if n in names), encoding="utf-8")
    for name in CAPTION_IMAGES:
        (out / "images" / name).write_bytes(emoji.read(f"images/{name}"))
    train_captioner(CaptionTrainConfig(data=str(out / "captions"), out=str(out / "caption-run"), image_size=16,
                                       channels=(8, 16), hidden_size=24, embedding_dim=8, attention_dim=8,
                                       batch_size=8, max_steps=300, eval_every=300, max_caption_len=20))
    shutil.copy(out / "caption-run" / "best.pt", out / "caption.pt")

    make_lines(ROOT / "corpora/tinyshakespeare.txt", out / "line-set", count=48, val_count=4, seed=3)
    train_reader(CTCTrainConfig(data=str(out / "line-set"), out=str(out / "ctc-run"), height=32, channels=(8, 16),
                                hidden_size=24, num_layers=1, batch_size=8, max_steps=400, eval_every=400))
    shutil.copy(out / "ctc-run" / "best.pt", out / "ctc.pt")
    (out / "lines").mkdir()
    for png in sorted((out / "line-set" / "val").glob("*.png")):
        shutil.copy(png, out / "lines" / png.name)
    shutil.copy(out / "line-set" / "val" / "labels.tsv", out / "lines" / "labels.tsv")
    for run in ("caption-run", "ctc-run", "line-set"):
        shutil.rmtree(out / run)
    (out / "expected.json").write_text(json.dumps(outputs(out), indent=1, ensure_ascii=False) + "\n",
                                       encoding="utf-8")


if __name__ == "__main__":
    os.chdir(ROOT)
    make_fixtures(Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURES)
