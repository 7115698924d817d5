"""Scoring a translator (charrnn/translate/scores.py): edit distance, the closest of several references, and the
rates computed against it, on examples small enough to count by hand."""

import sys

import pytest

from charrnn.translate.scores import edit_distance, sacrebleu_scores, translation_scores


@pytest.mark.parametrize(("a", "b", "distance"), [
    ("", "", 0),
    ("", "abc", 3),
    ("ab", "acb", 1),  # an insertion
    ("abc", "ac", 1),  # a deletion
    ("abc", "abd", 1),  # a substitution
    ("kitten", "sitting", 3),
    ("dgo", "dog", 2),  # a transposition is two edits
    (["K", "AE", "T"], ["K", "AH", "T"], 1),
    (["CH"], ["C", "H"], 2),  # tokens compare whole: one substitution and one insertion ...
    ("CH", "CH", 0),  # ... where their characters are equal
    ([], ["AH"], 1),
])
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance
    assert edit_distance(b, a) == distance


def test_character_targets_score_against_the_closest_reference():
    outputs = [list("cat"), list("dgo")]
    references = [[list("cat")], [list("dog"), list("dgoo")]]  # "dgo" is 2 edits from "dog", 1 from "dgoo"
    scores = translation_scores(outputs, references, joiner="")
    assert scores["examples"] == 2
    assert scores["exact_match"] == 0.5 and scores["error_rate"] == 0.5
    assert scores["token_error_rate"] == pytest.approx(1 / 7)  # 1 edit over "cat" + "dgoo"
    assert scores["cer"] == pytest.approx(1 / 7)  # characters are the tokens
    assert scores["wer"] == pytest.approx(1 / 2)  # each text is one word; "dgo" != "dgoo"


def test_phone_targets_and_a_tie_goes_to_the_first_reference():
    outputs = [["K", "AE", "T"], ["T", "AH", "M", "EY", "T", "OW"]]
    references = [[["K", "AE", "T"]],
                  [["T", "AH", "M", "AA", "T", "OW"], ["T", "AH", "M", "EY", "D", "OW"]]]  # each 1 phone away
    scores = translation_scores(outputs, references, joiner=" ")
    assert scores["exact_match"] == 0.5 and scores["error_rate"] == 0.5
    assert scores["token_error_rate"] == pytest.approx(1 / 9)  # 1 phone wrong of 3 + 6
    assert scores["wer"] == pytest.approx(1 / 9)  # split on spaces, the words are the phones
    # Characters against the first reference: "T AH M EY T OW" -> "T AH M AA T OW" is 2 edits (the second
    # reference would have been 1), over "K AE T" (6 characters, spaces count) + 14.
    assert scores["cer"] == pytest.approx(2 / 20)


def test_an_output_equal_to_any_reference_is_an_exact_match():
    references = [[["HH", "AH", "L", "OW"], ["HH", "EH", "L", "OW"]], [list("ab"), list("ba")]]
    scores = translation_scores([["HH", "EH", "L", "OW"], list("ba")], references, joiner=" ")
    assert scores["exact_match"] == 1 and scores["error_rate"] == 0
    assert scores["token_error_rate"] == scores["cer"] == scores["wer"] == 0


def test_sentence_targets_count_words():
    outputs = [list("the cat sat"), list("a dog")]
    references = [[list("the cat sat")], [list("the dog"), list("a dog ran")]]  # both 1 word from "a dog"
    scores = translation_scores(outputs, references, joiner="")
    assert scores["wer"] == pytest.approx(1 / 5)  # against "the dog": 1 of 3 + 2 words
    assert scores["cer"] == pytest.approx(3 / 18)  # "a dog" -> "the dog": 3 of 11 + 7 characters
    assert scores["error_rate"] == pytest.approx(1 - scores["exact_match"]) == 0.5


def test_empty_outputs_are_all_deletions_and_longer_ones_can_exceed_one():
    scores = translation_scores([[], []], [[["AH", "B"]], [list("xy")]], joiner=" ")
    assert scores["exact_match"] == 0 and scores["error_rate"] == 1
    assert scores["token_error_rate"] == 1 and scores["cer"] == 1 and scores["wer"] == 1
    assert translation_scores([list("aaaa")], [[list("b")]], joiner="")["cer"] == 4  # 1 substitution, 3 insertions
    assert translation_scores([[]], [[[]]], joiner="")["exact_match"] == 1  # an empty reference: nothing to divide


def test_nothing_to_score_or_a_missing_reference_is_refused():
    with pytest.raises(ValueError, match="no outputs"):
        translation_scores([], [], joiner="")
    with pytest.raises(ValueError, match="one list per output"):
        translation_scores([list("a")], [], joiner="")
    with pytest.raises(ValueError, match="at least one reference"):
        translation_scores([list("a")], [[]], joiner="")


def test_without_sacrebleu_there_are_no_bleu_scores(monkeypatch):
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # `import sacrebleu` now fails as when not installed
    monkeypatch.setitem(sys.modules, "sacrebleu.metrics", None)
    assert sacrebleu_scores(["a cat"], [["a cat"]]) is None


def test_sacrebleu_scores_with_several_and_variable_references():
    pytest.importorskip("sacrebleu")
    outputs = ["the cat sat on the mat .", "a dog ran in the park ."]
    references = [["the cat sat on the mat ."], ["the dog is running .", "a dog ran in the park ."]]
    perfect = sacrebleu_scores(outputs, references)  # the second matches its second reference exactly
    assert perfect["bleu"] == pytest.approx(100) and perfect["chrf"] == pytest.approx(100)
    assert "nrefs:var" in perfect["sacrebleu"]  # the missing reference was padded as absent, not as text
    wrong = ["the cat sat on a mat .", "the dog ran ."]
    padded = sacrebleu_scores(wrong, references)
    repeated = sacrebleu_scores(wrong, [references[0] * 2, references[1]])  # a repeated reference adds nothing
    assert 0 < padded["bleu"] < 100 and 0 < padded["chrf"] < 100
    assert padded["bleu"] == pytest.approx(repeated["bleu"]) and padded["chrf"] == pytest.approx(repeated["chrf"])
