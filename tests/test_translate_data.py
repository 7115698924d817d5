"""Translation pairs in each format, bad rows by file and line, the split by source, and the bundled CMU
dictionary (fixtures written here; no torch)."""

from pathlib import Path

import pytest

from charrnn.core.errors import CharRNNError
from charrnn.translate.config import DEFAULT_DATA
from charrnn.translate.data import read_pair_data, read_pairs, split_tokens

ROOT = Path(__file__).resolve().parents[1]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def many(n=40, per=1):
    """n sources, each with `per` targets, as TSV lines."""
    return "".join(f"w{k}\tt{k} v{j}\n" for k in range(n) for j in range(per))


def test_split_tokens():
    assert split_tokens("ab c", "chars") == ["a", "b", " ", "c"]
    assert split_tokens(" K  S\tT ", "words") == ["K", "S", "T"]
    with pytest.raises(CharRNNError, match="chars, words"):
        split_tokens("x", "bytes")


def test_tsv_with_extra_columns_and_stripped_fields(tmp_path):
    # A Tatoeba export: source, target, then ids and attribution.
    path = write(tmp_path / "fra.tsv", "Go.\tVa !\tCC-BY 2.0 (France) #2877272\n Hi. \t Salut ! \tx\ty\n")
    pairs = read_pairs(path, bad=(bad := []))
    assert bad == []
    assert pairs.sources == ["Go.", "Hi."] and pairs.targets == ["Va !", "Salut !"]
    assert pairs.origins == [("fra.tsv", 1), ("fra.tsv", 2)]


def test_tsv_custom_columns(tmp_path):
    path = write(tmp_path / "d.tsv", "1\tbonjour\thello\n2\tchat\tcat\n")
    pairs = read_pairs(path, source_column=3, target_column=2, bad=(bad := []))
    assert bad == [] and pairs.sources == ["hello", "cat"] and pairs.targets == ["bonjour", "chat"]


def test_anki_header_is_skipped(tmp_path):
    text = "#separator:tab\n#html:false\n#tags column:3\nhello\tbonjour\ttag1\n#not a header\tdiese\n"
    pairs = read_pairs(write(tmp_path / "anki.txt", text), bad=(bad := []))
    assert bad == []
    assert pairs.sources == ["hello", "#not a header"]  # only the top of the file is a header
    assert pairs.origins[0] == ("anki.txt", 4)


def test_aligned_files(tmp_path):
    src = write(tmp_path / "train.en", "hello\r\ncat\n")
    tgt = write(tmp_path / "train.fr", "\ufeffbonjour\nchat")  # BOM, no last line end
    pairs = read_pairs(None, source=src, target=tgt, bad=(bad := []))
    assert bad == [] and pairs.sources == ["hello", "cat"] and pairs.targets == ["bonjour", "chat"]
    assert pairs.origins == [("train.en", 1), ("train.en", 2)]


def test_aligned_blank_and_undecodable_lines_keep_numbers_aligned(tmp_path):
    src = write(tmp_path / "a.src", b"one\n\nthr\xe9e\nfour\n")
    tgt = write(tmp_path / "a.tgt", "un\ndeux\ntrois\n\n")
    bad = []
    pairs = read_pairs(None, source=src, target=tgt, bad=bad)
    assert pairs.sources == ["one"] and pairs.targets == ["un"]
    assert [(b.file, b.line) for b in bad] == [("a.src", 3), ("a.src", 2), ("a.tgt", 4)]
    assert "byte 0xe9" in bad[0].reason and bad[1].reason == "empty source" and bad[2].reason == "empty target"


def test_aligned_count_mismatch(tmp_path):
    src = write(tmp_path / "s.txt", "a\nb\nc\n")
    tgt = write(tmp_path / "t.txt", "x\ny\n")
    with pytest.raises(CharRNNError, match=r"s.txt' has 3 lines and '.*t.txt' has 2; --source and --target"):
        read_pair_data(source=src, target=tgt)


def test_bad_rows_by_file_and_line(tmp_path):
    text = "ok\tfine\nno tab here\n\ta target\nsource\t \nbyte\t\xff\n" + "\n" + "a\tb\n"
    path = write(tmp_path / "d.tsv", text.encode("latin-1"))
    bad = []
    read_pairs(path, bad=bad)
    got = sorted((b.line, b.reason.split(";")[0]) for b in bad)
    assert got == [(2, "1 column (no TAB), --target-column is 2"), (3, "empty source"), (4, "empty target"),
                   (5, "byte 0xff (byte 6 of the line) is not UTF-8")]
    with pytest.raises(CharRNNError, match=r"^4 bad rows: d.tsv line 2: 1 column .*; d.tsv line 3: empty source "
                                           r"\(and 2 more\); fix them or pass --skip-bad$"):
        read_pair_data(path)


def test_too_few_columns_names_the_flag(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\n")
    with pytest.raises(CharRNNError, match=r"^d.tsv line 1: 2 columns, --target-column is 3; fix it or pass"):
        read_pair_data(path, target_column=3)
    with pytest.raises(CharRNNError, match="2 columns, --source-column is 4"):
        read_pair_data(path, source_column=4, target_column=1)


def test_skip_bad_keeps_good_rows_and_lists_skipped(tmp_path):
    path = write(tmp_path / "d.tsv", many(20) + "lonely\n" + "\tx\n")
    data = read_pair_data(path, skip_bad=True, val_frac=0.1, test_frac=0)
    assert len(data.train) + len(data.val) == 20
    assert [(b.file, b.line) for b in data.skipped] == [("d.tsv", 21), ("d.tsv", 22)]


@pytest.mark.parametrize("tokens, target, unit", [("chars", "abcdef", "6 characters"),
                                                  ("words", "K S AH L T", "5 tokens")])
def test_max_target_len(tmp_path, tokens, target, unit):
    path = write(tmp_path / "d.tsv", f"x\t{target}\ny\tab\n")
    with pytest.raises(CharRNNError, match=f"d.tsv line 1: target of {unit}, more than --max-target-len 4"):
        read_pair_data(path, target_tokens=tokens, max_target_len=4, val_frac=0, test_frac=0)
    data = read_pair_data(path, target_tokens=tokens, max_target_len=4, val_frac=0, test_frac=0, skip_bad=True)
    assert data.train.sources == ["y"] and data.val is None
    assert len(read_pair_data(path, target_tokens=tokens, max_target_len=6, val_frac=0, test_frac=0).train) == 2


def test_utf16_refused(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("a\tb\n", encoding="utf-16")
    with pytest.raises(CharRNNError, match="UTF-16 text, not UTF-8.*iconv"):
        read_pair_data(path)
    src = write(tmp_path / "s.txt", "a\n")
    (tmp_path / "t.txt").write_text("b\n", encoding="utf-16")
    with pytest.raises(CharRNNError, match="t.txt is UTF-16 text"):
        read_pair_data(source=src, target=tmp_path / "t.txt")


def test_split_by_source(tmp_path):
    path = write(tmp_path / "d.tsv", many(60, per=2))
    data = read_pair_data(path, val_frac=0.2, test_frac=0.1, seed=3)
    sides = [set(part.sources) for part in (data.train, data.val, data.test)]
    assert len(sides[1]) == 12 and len(sides[2]) == 6 and len(sides[0]) == 42
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    for part in (data.train, data.val, data.test):
        assert all(part.sources.count(s) == 2 for s in part.sources)  # both targets on the same side
        assert [o[1] for o in part.origins] == sorted(o[1] for o in part.origins)  # file order
    assert "by source (seed 3)" in data.split_rule and "validation 24 pairs of 12 sources" in data.split_rule
    again = read_pair_data(path, val_frac=0.2, test_frac=0.1, seed=3)
    assert again.val.sources == data.val.sources and again.test.sources == data.test.sources
    other = read_pair_data(path, val_frac=0.2, test_frac=0.1, seed=4)
    assert other.val.sources != data.val.sources


def test_nothing_left_to_train(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\na\tc\n")
    with pytest.raises(CharRNNError, match="no training pairs are left.*lower --val-frac or --test-frac"):
        read_pair_data(path, val_frac=0.6, test_frac=0)
    with pytest.raises(CharRNNError, match="leave nothing to train on"):
        read_pair_data(path, val_frac=0.5, test_frac=0.5)


def test_references_group_targets_by_source(tmp_path):
    path = write(tmp_path / "d.tsv", "read\tR IY D\nx\tEH K S\nread\tR EH D\nread\tR IY D\n")
    pairs = read_pairs(path, bad=[])
    assert pairs.references() == {"read": ["R IY D", "R EH D"], "x": ["EH K S"]}
    assert pairs.subset([1]).references() == {"x": ["EH K S"]}


def test_val_dir_as_tsv_file(tmp_path):
    path = write(tmp_path / "train.tsv", many(20))
    val = write(tmp_path / "valid.tsv", "w3\tt3 v0\nnew\tword\n")
    data = read_pair_data(path, val_dir=val, val_frac=0.5, test_frac=0.1, seed=0)
    assert data.val.sources == ["w3", "new"] and data.val.origins == [("valid.tsv", 1), ("valid.tsv", 2)]
    assert len(data.train) + len(data.test) == 20 and len(data.test) == 2  # --val-frac not used, --test-frac is
    note = "1 validation source also occurs in training (e.g. 'w3'); validation scores it as seen input"
    assert data.notes == ([note] if "w3" in data.train.sources else [])
    assert "validation " + str(val) in data.split_rule


def test_val_dir_of_aligned_files(tmp_path):
    src = write(tmp_path / "train.en", "".join(f"w{k}\n" for k in range(10)))
    tgt = write(tmp_path / "train.fr", "".join(f"m{k}\n" for k in range(10)))
    write(tmp_path / "val" / "valid.en", "hello\nw1\n")
    write(tmp_path / "val" / "valid.fr", "bonjour\nm1\n")
    write(tmp_path / "val" / "README", "not data\n")
    data = read_pair_data(source=src, target=tgt, val_dir=tmp_path / "val", test_frac=0)
    assert data.val.sources == ["hello", "w1"] and data.val.targets == ["bonjour", "m1"]
    assert data.val.origins[0] == ("valid.en", 1) and len(data.train) == 10 and data.test is None
    assert data.notes[0].startswith("1 validation source also occurs in training")


def test_val_dir_directory_with_one_tsv(tmp_path):
    path = write(tmp_path / "train.tsv", many(10))
    write(tmp_path / "val" / "dev.tsv", "a\tb\n")
    data = read_pair_data(path, val_dir=tmp_path / "val", test_frac=0)
    assert data.val.sources == ["a"] and data.notes == []


def test_val_dir_that_does_not_fit(tmp_path):
    path = write(tmp_path / "train.tsv", many(10))
    write(tmp_path / "val" / "a.tsv", "a\tb\n")
    write(tmp_path / "val" / "b.tsv", "a\tb\n")
    with pytest.raises(CharRNNError, match=r"^--val-dir '.*val' holds 2 .tsv files; it should hold one .tsv file$"):
        read_pair_data(path, val_dir=tmp_path / "val")
    src, tgt = write(tmp_path / "s.en", "a\n"), write(tmp_path / "s.fr", "b\n")
    write(tmp_path / "v2" / "x.de", "a\n")
    with pytest.raises(CharRNNError, match=r"holds 1 files, none of them .tsv; it should hold one .tsv file, or one "
                                           r"\*.en and one \*.fr file"):
        read_pair_data(source=src, target=tgt, val_dir=tmp_path / "v2")
    with pytest.raises(CharRNNError, match="no such --val-dir"):
        read_pair_data(path, val_dir=tmp_path / "nowhere")


def test_what_to_give(tmp_path):
    path = write(tmp_path / "d.tsv", "a\tb\n")
    with pytest.raises(CharRNNError, match=r"^give DATA \(a TSV file\) or --source FILE --target FILE, not both$"):
        read_pair_data(path, source=path, target=path)
    with pytest.raises(CharRNNError, match="give DATA"):
        read_pair_data()
    with pytest.raises(CharRNNError, match="--source and --target go together"):
        read_pair_data(source=path)
    with pytest.raises(CharRNNError, match=r"no such file: '.*missing.tsv'; give a TSV file"):
        read_pair_data(tmp_path / "missing.tsv")
    with pytest.raises(CharRNNError, match=r"no such file: '.*nope.fr'; give --source FILE --target FILE"):
        read_pair_data(source=path, target=tmp_path / "nope.fr")
    with pytest.raises(CharRNNError, match="is not a file"):
        read_pair_data(tmp_path)


def test_bundled_cmudict():
    data = read_pair_data(ROOT / DEFAULT_DATA, target_tokens="words", seed=0)
    assert data.skipped == [] and data.notes == []
    phones = {p for part in (data.train, data.val, data.test) for t in part.targets for p in t.split()}
    assert len(phones) == 39 and "EH" in phones and not any(c.isdigit() for p in phones for c in p)
    refs = data.train.references() | data.val.references() | data.test.references()
    assert refs["x"] == ["EH K S"]
    assert not set(data.train.sources) & set(data.val.sources)
