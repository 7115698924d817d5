"""Scoring a captioner (charrnn/caption/evaluate.py): the progress it reports through `on_progress`."""

from pathlib import Path

from charrnn.caption.evaluate import evaluate_captioner

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0"


def test_evaluation_reports_images_through_its_three_passes(monkeypatch):
    import charrnn.caption.evaluate

    args = (FIXTURES / "caption.pt", str(FIXTURES / "captions"))
    whole = evaluate_captioner(*args, part="all", beam_size=2, device="cpu")
    seen = []
    monkeypatch.setattr(charrnn.caption.evaluate, "EVAL_BATCH", 16)  # progress after every 16 images
    result = evaluate_captioner(*args, part="all", beam_size=2, device="cpu", on_progress=lambda *p: seen.append(p))
    assert result == whole  # decoding in smaller batches captions the same
    n = result["images"]
    assert {t for _, t in seen} == {3 * n} and seen[-1] == (3 * n, 3 * n)  # decoding, greedy, beam search
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert (n + 16, 3 * n) in seen and (2 * n + 32, 3 * n) in seen
