"""The captioner: shapes, loss at init, attention, decoding, metrics, learning, resume, and the CLI."""

import json
import math

import pytest
import torch
from PIL import Image, ImageDraw

from charrnn.caption.config import CaptionerConfig, CaptionTrainConfig
from charrnn.caption.decode import caption_images
from charrnn.caption.evaluate import caption_scores
from charrnn.caption.model import Captioner, caption_loss
from charrnn.caption.task import resume_config, train
from charrnn.core.decoding import beam_search, decode

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 30), "blue": (30, 30, 220), "black": (0, 0, 0),
           "orange": (250, 150, 0)}
SHAPES = ("square", "circle", "bar", "cross")


def draw(colour: str, shape: str, size: int = 32) -> Image.Image:
    im = Image.new("RGB", (size, size), "white")
    d, c, q = ImageDraw.Draw(im), COLOURS[colour], size // 4
    if shape == "square":
        d.rectangle([q, q, 3 * q, 3 * q], fill=c)
    elif shape == "circle":
        d.ellipse([q, q, 3 * q, 3 * q], fill=c)
    elif shape == "bar":
        d.rectangle([0, q, size, 2 * q], fill=c)
    else:
        d.rectangle([2 * q - 2, 0, 2 * q + 2, size], fill=c)
        d.rectangle([0, 2 * q - 2, size, 2 * q + 2], fill=c)
    return im


@pytest.fixture
def shapes_data(tmp_path):
    """20 images, each with its own caption "<colour> <shape>" (and a second reference for some)."""
    root = tmp_path / "shapes"
    (root / "images").mkdir(parents=True)
    lines = []
    for colour in COLOURS:
        for shape in SHAPES:
            name = f"images/{colour}-{shape}.png"
            draw(colour, shape).save(root / name)
            lines.append(f"{name}\t{colour} {shape}")
    lines.append("images/red-square.png\ta red square")
    (root / "captions.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def tiny(data, out, **kw) -> CaptionTrainConfig:
    base = dict(data=str(data), out=str(out), val_frac=0.0, image_size=16, channels=(16, 32), hidden_size=64,
                embedding_dim=16, attention_dim=32, batch_size=10, lr=1e-2, schedule="constant", max_steps=4,
                eval_every=1000, seed=0, device="cpu", precision="fp32")
    return CaptionTrainConfig(**{**base, **kw})


def model(attention=True, cell="lstm", **kw) -> Captioner:
    torch.manual_seed(0)
    config = CaptionerConfig(vocab_size=12, image_size=16, channels=(8, 16), cell=cell, num_layers=2, hidden_size=32,
                           attention=attention, **kw)
    return Captioner(config).eval()


IMAGES = torch.randint(0, 256, (3, 16, 16, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_shapes_and_loss_at_init(attention, cell):
    m = model(attention, cell)
    tokens = torch.randint(0, 10, (3, 7))
    logits, alphas = m(IMAGES, tokens)
    assert logits.shape == (3, 7, 12)
    assert (alphas.shape == (3, 7, 16)) if attention else alphas is None  # a 4x4 grid after two halvings
    _, ce = caption_loss(m, IMAGES, tokens, pad=11)
    assert abs(float(ce) - math.log(12)) < 0.5


def test_attention_weights_sum_to_one_over_the_grid():
    _, alphas = model()(IMAGES, torch.randint(0, 10, (3, 5)))
    assert torch.allclose(alphas.sum(-1), torch.ones(3, 5), atol=1e-6) and (alphas >= 0).all()


@pytest.mark.parametrize("attention", [True, False])
def test_beam_of_one_is_greedy(attention):
    m = model(attention)
    greedy = decode(m, IMAGES, bos=10, eos=10, max_len=12)
    beam = beam_search(m, IMAGES, bos=10, eos=10, max_len=12, beam_size=1)
    assert [d.tokens for d in greedy] == [d.tokens for d in beam]
    assert [d.score for d in greedy] == pytest.approx([d.score for d in beam], abs=1e-4)


def test_a_beam_as_wide_as_the_vocabulary_finds_the_most_likely_two_token_caption():
    # A wider beam is not always better than a narrower one, but a beam of V over two steps keeps every
    # first token, so its best caption must be the exact maximum over all V * V continuations.
    m = model()
    beam = beam_search(m, IMAGES, bos=10, eos=10, max_len=2, beam_size=12)
    with torch.no_grad():
        enc, state = m.encode(IMAGES)
        logits, after_bos, _ = m.step(torch.full((3,), 10), state, enc)
        first = logits.float().log_softmax(1)  # (3, V)
        totals = first.clone()  # ending at once (token 10) costs nothing more
        for t in (t for t in range(12) if t != 10):
            second, _, _ = m.step(torch.full((3,), t), after_bos, enc)
            totals[:, t] += second.float().log_softmax(1).max(1).values
        best = totals.max(1).values.tolist()
    assert [d.score for d in beam] == pytest.approx(best, abs=1e-4)
    greedy = decode(m, IMAGES, bos=10, eos=10, max_len=2)
    assert all(b.score >= g.score - 1e-5 for b, g in zip(beam, greedy))


def test_bleu_and_cider_against_hand_computed_values():
    # Identical captions: every n-gram precision 1, brevity 1.
    perfect = caption_scores(["a red square on white", "the blue circle is round"],
                             [["a red square on white"], ["the blue circle is round"]])
    for n in (1, 2, 3, 4):
        assert perfect[f"bleu{n}"] == pytest.approx(100.0, abs=1e-4)
    # CIDEr-D: each n-gram occurs in one of the two images, so idf = log 2 > 0 for all; identical tf-idf
    # vectors give cosine 1 and no length penalty, times 10, averaged over n = 1..4: 10.
    assert perfect["cider"] == pytest.approx(10.0, abs=1e-6) and perfect["exact_match"] == 100.0
    # One word wrong of four: p1 = 3/4, p2 = 2/3, same length, so BLEU-2 = sqrt(3/4 * 2/3) = sqrt(1/2).
    one_off = caption_scores(["a b c d"], [["a b c e"]])
    assert one_off["bleu1"] == pytest.approx(75.0, abs=1e-4)
    assert one_off["bleu2"] == pytest.approx(100 * math.sqrt(0.5), abs=1e-4)
    # No 4-gram matches: the COCO code smooths the zero precision to 1e-15 (its "tiny"), p3 = 1/2.
    assert one_off["bleu4"] == pytest.approx(100 * (0.75 * 2 / 3 * 0.5 * 1e-15) ** 0.25, rel=1e-4)
    assert one_off["exact_match"] == 0.0
    # Several references: a hypothesis equal to the second one is exact.
    assert caption_scores(["red square"], [["a red square", "red square"]])["exact_match"] == 100.0


def test_overfits_twenty_images_to_their_own_captions(tmp_path, shapes_data):
    s = train(tiny(shapes_data, tmp_path / "run", batch_size=20, max_steps=150, lr=2e-2, attention=True))
    assert s.history[-1] < 0.1
    from charrnn.caption.data import cache_images, read_captions
    from charrnn.caption.model import load_captioner

    m, tok, _ = load_captioner(tmp_path / "run")
    data = read_captions(shapes_data, val_frac=0.0)
    pixels = cache_images(data.train, tmp_path / "cache", size=16)
    captions = [tok.decode(d.tokens) for d in caption_images(m, tok, pixels.pixels, max_len=30)]
    # Not one caption for every image (the collapse seen without normalisation): each image its own.
    assert len(set(captions)) == 20
    assert sum(c in refs for c, refs in zip(captions, pixels.captions)) >= 19


def test_resume_reproduces_the_uninterrupted_losses(tmp_path, shapes_data):
    kw = dict(max_steps=6, dropout=0.1, scheduled_sampling=0.3, eval_every=3, val_frac=0.2)
    full = train(tiny(shapes_data, tmp_path / "full", **kw))
    stop_at_4 = {}

    def interrupt(event):
        if event["kind"] == "train" and event["step"] == 4:
            stop_at_4["stop"].set()

    import threading

    stop_at_4["stop"] = threading.Event()
    part = train(tiny(shapes_data, tmp_path / "part", **kw), interrupt, stop=stop_at_4["stop"])
    assert part.step == 4
    rest = train(resume_config(tmp_path / "part"), resume=True)
    assert part.history + rest.history == pytest.approx(full.history, abs=1e-6)
    assert rest.best == pytest.approx(full.best, abs=1e-9)


def test_cli_train_sample_eval(tmp_path, shapes_data):
    from typer.testing import CliRunner

    from charrnn.cli import app

    run = tmp_path / "run"
    args = ["caption", "train", str(shapes_data), "--out", str(run), "--image-size", "16", "--channels", "8,16",
            "--hidden-size", "32", "--batch-size", "8", "--max-steps", "3", "--eval-every", "3", "--val-frac", "0.2",
            "--device", "cpu", "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["step"] == 3 and summary["selection"] == "bleu4" and summary["unit"] == "images"
    image = shapes_data / "images" / "red-square.png"
    r = CliRunner().invoke(app, ["caption", "sample", str(run), str(image), "--beam-size", "2", "--json",
                                 "--show-attention", str(tmp_path / "att.png")])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"][0]["image"] == str(image)
    assert Image.open(tmp_path / "att.png").size[0] >= 96
    r = CliRunner().invoke(app, ["caption", "eval", str(run), "--json", "--beam-size", "2"])
    assert r.exit_code == 0, r.output
    scores = json.loads(r.stdout)
    assert scores["images"] == 4 and set(scores["greedy"]) == {"bleu1", "bleu2", "bleu3", "bleu4", "cider",
                                                                "exact_match"}
    r = CliRunner().invoke(app, ["caption", "sample", str(run), str(tmp_path / "missing.png")])
    assert r.exit_code == 2 and "no such image" in r.stderr
    r = CliRunner().invoke(app, ["sample", str(run)])  # a caption model given to the language model's sampler
    assert r.exit_code == 2 and "charrnn caption" in r.stderr


def test_caption_train_has_a_flag_for_every_setting():
    import dataclasses
    import re

    from typer.testing import CliRunner

    from charrnn.cli import app

    text = CliRunner().invoke(app, ["caption", "train", "--help"], env={"COLUMNS": "200"}).stdout
    for field in dataclasses.fields(CaptionTrainConfig):
        if field.name not in ("data", "attention"):
            flag = "--" + field.name.replace("_", "-")
            assert re.search(rf"(?<![\w-]){flag}(?![\w-])", text), f"caption train --help lacks {flag}"
    assert "--attention" in text and "--no-attention" in text and "DATA" in text


def test_a_frozen_encoder_keeps_its_weights_and_batchnorm_statistics(tmp_path, shapes_data):
    from charrnn.caption.task import build
    from charrnn.core.distributed import World

    config = tiny(shapes_data, tmp_path / "run", freeze_encoder=True)
    task = build(config, checkpoint=None, world=World(), device=torch.device("cpu"))
    start = {k: v.clone() for k, v in task.model.encoder.state_dict().items()}
    task.model.train()
    task.loss(task.model, 0, 0).backward()
    assert all(p.grad is None for p in task.model.encoder.parameters())
    assert all(torch.equal(start[k], v) for k, v in task.model.encoder.state_dict().items())  # BN statistics too
    assert all(p.grad is not None for p in task.model.head.parameters())


def test_encoder_options_are_checked():
    import importlib.util

    from charrnn.core.errors import CharRNNError

    with pytest.raises(CharRNNError, match="--encoder-weights is for a ResNet encoder"):
        CaptionTrainConfig(encoder_weights="w.pt")
    with pytest.raises(CharRNNError, match="too small for the resnet18 encoder"):
        CaptionTrainConfig(encoder="resnet18", image_size=16)
    if importlib.util.find_spec("torchvision") is None:
        with pytest.raises(CharRNNError, match="needs torchvision"):
            Captioner(CaptionerConfig(vocab_size=5, image_size=32, encoder="resnet18"))


def test_resnet_encoder_loads_local_torchvision_weights(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    net = torchvision.models.resnet18(weights=None)
    torch.save(net.state_dict(), tmp_path / "r18.pt")
    m = Captioner(CaptionerConfig(vocab_size=7, image_size=32, encoder="resnet18", hidden_size=16, attention_dim=8))
    m.encoder.load_weights(tmp_path / "r18.pt")
    assert torch.equal(m.encoder.body[0].weight, net.conv1.weight)
    assert torch.equal(m.encoder.body[7][1].bn2.running_var, net.layer4[1].bn2.running_var)
    logits, alphas = m.eval()(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.long))
    assert logits.shape == (2, 3, 7) and alphas.shape == (2, 3, 1)  # 32 px / 32 = a 1x1 grid
    torch.save({"not": torch.zeros(1)}, tmp_path / "other.pt")
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pt")  # other shapes
    from charrnn.core.errors import CharRNNError

    for wrong in ("other.pt", "r50.pt"):
        with pytest.raises(CharRNNError, match="does not fit this ResNet"):
            m.encoder.load_weights(tmp_path / wrong)


def test_word_tokens(tmp_path, shapes_data):
    from charrnn.caption.model import load_captioner
    from charrnn.core.tokenizer import WordTokenizer

    train(tiny(shapes_data, tmp_path / "run", tokens="word", max_steps=2))
    m, tok, _ = load_captioner(tmp_path / "run")
    assert isinstance(tok, WordTokenizer) and tok.vocab_size == len(COLOURS) + len(SHAPES) + 1 + 2  # + "a"
    assert tok.decode(tok.encode("a purple square", map_unknown=True)) == "a \ufffd square"
    assert tok.decode(tok.encode("a red square")) == "a red square"


def test_data_that_is_a_file_the_run_writes_is_refused(tmp_path):
    from charrnn.core.errors import CharRNNError

    data = tmp_path / "train-images.u8"  # the name of the run's own image cache
    data.write_bytes(b"not to be overwritten")
    with pytest.raises(CharRNNError, match="is a file the run writes"):
        train(tiny(data, tmp_path), overwrite=True)
    assert data.read_bytes() == b"not to be overwritten"


def test_the_shipped_captioner_describes_an_image_with_no_run_directory():
    from pathlib import Path

    from typer.testing import CliRunner

    from charrnn.cli import app

    image = Path(__file__).parent.parent / "corpora" / "examples" / "monkey.png"
    r = CliRunner().invoke(app, ["caption", "sample", str(image), "--json"])
    assert r.exit_code == 0, r.output
    caption = json.loads(r.stdout)["images"][0]["captions"][0]
    assert caption and caption.strip() == caption


def test_a_signal_during_a_long_decoding_stops_the_run_at_once(tmp_path, shapes_data, monkeypatch):
    # A captioner that never ends a caption decodes max_caption_len steps per image in every evaluation
    # (`--max-caption-len 1000000000` took over 150 s, deaf to SIGTERM): the decoding checks for a stop each step.
    import os
    import signal

    from charrnn.core.checkpoint import load_checkpoint

    real_step, decoding = Captioner.step, []

    def endless(self, token, state, enc):
        logits, state, alpha = real_step(self, token, state, enc)
        if self.training:
            return logits, state, alpha
        decoding.append(1)
        if len(decoding) == 20:
            os.kill(os.getpid(), signal.SIGTERM)
        return torch.zeros_like(logits).index_fill_(1, torch.tensor([0]), 1.0), state, alpha  # never <eod>

    monkeypatch.setattr(Captioner, "step", endless)
    run = tmp_path / "run"
    s = train(tiny(shapes_data, run, val_frac=0.25, max_steps=4, eval_every=2, max_caption_len=200))
    assert s.stop_reason.value == "interrupted" and s.step == 2 and len(decoding) == 20  # not one step more
    assert load_checkpoint(run / "last.pt")["train_state"]["step"] == 2

    monkeypatch.undo()
    assert train(resume_config(run), resume=True).step == 4
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    evals = [r["step"] for r in records if r["kind"] == "eval"]
    assert evals == [2, 4]  # the stopped evaluation was done on resume


@pytest.mark.parametrize("change, message", [
    ("caption", r"the captions were edited"),
    ("image", r"images were replaced or edited"),
    ("row", r"21 images now, 20 then"),
])
def test_resume_refuses_data_that_changed_since_the_run_started(tmp_path, shapes_data, change, message):
    import os

    from charrnn.core.errors import CharRNNError

    run = tmp_path / "run"
    train(tiny(shapes_data, run, max_steps=2))
    cache = (run / "train-images.json").read_bytes()
    tsv = shapes_data / "captions.tsv"
    if change == "caption":  # new characters, which the run's vocabulary does not even have
        tsv.write_text(tsv.read_text().replace("red square", "rouge carré"), encoding="utf-8")
    elif change == "image":
        draw("blue", "circle").save(shapes_data / "images" / "red-square.png")
    else:
        draw("blue", "circle").save(shapes_data / "images" / "extra.png")
        tsv.write_text(tsv.read_text() + "images/extra.png\tblue circle\n", encoding="utf-8")
    with pytest.raises(CharRNNError, match=rf"training data in .*shapes' changed since this run started \({message}\),"
                                           r" so resuming would train on other data; put the original files back, or "
                                           r"start a new run on the data as it is now with --out"):
        train(resume_config(run, max_steps=4), resume=True)
    assert (run / "train-images.json").read_bytes() == cache  # refused before anything was decoded
    # A run from before data fingerprints resumes as it always did.
    from charrnn.core.checkpoint import with_checksums

    ckpt = torch.load(run / "last.pt", weights_only=True)
    del ckpt["meta"]["data_fingerprint"]
    torch.save(with_checksums(ckpt), run / "last.pt")
    os.utime(run / "last.pt")
    assert train(resume_config(run, max_steps=4), resume=True).step == 4


def test_resume_goes_on_when_the_images_were_only_touched_or_copied(tmp_path, shapes_data):
    import os
    import shutil

    run = tmp_path / "run"
    train(tiny(shapes_data, run, max_steps=2))
    for image in (shapes_data / "images").iterdir():
        os.utime(image, (1, 1))  # new mtimes, same bytes: what a copy without -p does
    shutil.copy(shapes_data / "captions.tsv", tmp_path / "tsv")
    shutil.copy(tmp_path / "tsv", shapes_data / "captions.tsv")
    assert train(resume_config(run, max_steps=3), resume=True).step == 3
    assert train(resume_config(run, max_steps=4), resume=True).step == 4  # the new signatures were recorded
