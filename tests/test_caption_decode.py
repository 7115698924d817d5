from pathlib import Path

from typer.testing import CliRunner

import charrnn.caption.decode as decode
from charrnn.cli import app

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"
IMAGES = sorted((RELEASE / "images").glob("*.png"))


def test_captions_stream_one_at_a_time(monkeypatch):
    calls = []
    real = decode.caption_images

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(decode, "caption_images", counted)
    stream = decode.iter_descriptions(RELEASE / "caption.pt", [IMAGES[0]], temperature=1.0, num_samples=1000,
                                      seed=0, device="cpu")
    first = next(stream)
    assert len(calls) == 1  # the first caption comes before the other 999 are decoded
    assert first == {"image": str(IMAGES[0]), "index": 0, "sample": 0, "caption": first["caption"]}
    stream.close()


def test_the_stream_and_the_whole_result_agree():
    kw = dict(temperature=1.0, num_samples=3, seed=5, device="cpu")
    items = list(decode.iter_descriptions(RELEASE / "caption.pt", IMAGES, **kw))
    assert [(i["index"], i["sample"]) for i in items] == [(k, s) for s in range(3) for k in range(len(IMAGES))]
    whole = decode.describe_images(RELEASE / "caption.pt", IMAGES, **kw)
    assert whole["images"] == [{"image": str(p), "captions": [i["caption"] for i in items if i["index"] == k]}
                               for k, p in enumerate(IMAGES)]
    r = CliRunner().invoke(app, ["caption", "sample", str(RELEASE / "caption.pt"), *map(str, IMAGES),
                                 "--temperature", "1", "--num-samples", "3", "--seed", "5", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"{i['image']}\t{i['caption']}" for i in items]
