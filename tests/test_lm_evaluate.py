import pytest

from charrnn.core.errors import CharRNNError
from charrnn.lm.evaluate import evaluate_file
from charrnn.lm.model import load_model


def test_a_text_of_only_unknown_characters_is_not_a_perfect_score(trained_run, tmp_path):
    run, _ = trained_run
    model, tok, _ = load_model(run)
    alien = tmp_path / "alien.txt"
    alien.write_text("ЖЖЖЖЖЖЖЖ", encoding="utf-8")
    with pytest.raises(CharRNNError, match="nothing can be scored"):
        evaluate_file(model, tok, alien, map_unknown=True)
    mixed = tmp_path / "mixed.txt"
    mixed.write_text("First ЖЖ Citizen", encoding="utf-8")
    result = evaluate_file(model, tok, mixed, map_unknown=True)
    assert result.unknown_chars == 2 and result.chars == len("First ЖЖ Citizen") - 2


def test_streams_must_be_positive(trained_run):
    run, corpus = trained_run
    model, tok, _ = load_model(run)
    with pytest.raises(CharRNNError, match="--streams must be at least 1"):
        evaluate_file(model, tok, corpus, streams=0)


def test_progress_counts_the_characters_scored(trained_run):
    run, corpus = trained_run
    model, tok, _ = load_model(run)
    seen = []
    result = evaluate_file(model, tok, corpus, streams=4, on_progress=lambda done, total: seen.append((done, total)))
    assert evaluate_file(model, tok, corpus, streams=4).nats_per_char == result.nats_per_char  # nothing else changes
    dones = [done for done, _ in seen]
    assert len(seen) > 1 and dones == sorted(dones) and seen[-1] == (result.chars, result.chars)
