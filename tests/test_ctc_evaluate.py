"""Scoring a line reader (charrnn/ctc/evaluate.py): the progress it reports through `on_progress`."""

from pathlib import Path

from charrnn.ctc.decode import Fusion
from charrnn.ctc.evaluate import evaluate_reader, tune_lm

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "release-0.1.0"


def scores(result: dict) -> dict:
    return {k: {m: v for m, v in s.items() if m != "lines_per_s"} if isinstance(s, dict) else s
            for k, s in result.items()}


def test_evaluation_reports_lines_through_every_pass_and_scores_the_same(monkeypatch):
    import charrnn.ctc.search

    fusion = Fusion(str(FIXTURES / "lm"), lm_weight=0.5, char_bonus=1.0, lm_unknown="floor")
    args = dict(beam_size=4, fusion=fusion, device="cpu")
    whole = evaluate_reader(FIXTURES / "ctc.pt", str(FIXTURES / "lines"), **args)
    seen = []
    monkeypatch.setattr(charrnn.ctc.search, "LM_GROUP", 1)  # progress after every line of a beam search
    result = evaluate_reader(FIXTURES / "ctc.pt", str(FIXTURES / "lines"), on_progress=lambda *p: seen.append(p),
                             **args)
    assert scores(result) == scores(whole)  # searching the lines a few at a time reads them the same
    lines = result["lines"]
    total = 5 * lines  # decoding the images, the network, greedy, beam, beam + LM
    assert {t for _, t in seen} == {total} and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert {(3 * lines + k, total) for k in range(1, lines + 1)} <= set(seen)  # the beam pass, line by line


def test_tuning_reports_the_grid_in_lines():
    seen = []
    result = tune_lm(FIXTURES / "ctc.pt", str(FIXTURES / "lm"), str(FIXTURES / "lines"), beam_size=2,
                     lm_weights=(0.0, 0.5), char_bonuses=(1.0,), max_lines=3, lm_unknown="floor", device="cpu",
                     on_progress=lambda *p: seen.append(p))
    total = 2 * 4 + 2 * 3  # 4 lines decoded and read by the network, then 3 for each of the 2 pairs
    assert result["lines"] == 3 and seen[-1] == (total, total) and {t for _, t in seen} == {total}
