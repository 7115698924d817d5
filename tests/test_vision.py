"""What the image tasks share (charrnn.vision) and the one text sniffer every reader uses (charrnn.core.text)."""

import re
from pathlib import Path

import numpy as np
import pytest

from charrnn.caption.data import CaptionSplit, read_captions
from charrnn.core.errors import CharRNNError
from charrnn.core.text import iter_text, sniff_wide_encoding
from charrnn.ctc.data import LineSplit, read_lines
from charrnn.vision.cache import npy_header
from charrnn.vision.dataset import BadRow, bad_rows_message, relabel


@pytest.mark.parametrize("codec, text", [
    ("utf-16-le", "a.png\tпривет, мир\n" * 3),  # NULs in under a quarter of the bytes
    ("utf-16-be", "a.png\t一 二 三\n" * 3),  # NULs in both parities: 一 is U+4E00
    ("utf-32-le", "a.png\thello\n" * 3),
    ("utf-32-be", "a.png\thello\n"),
])
def test_a_wide_file_without_byte_order_mark_is_named_alike_by_the_corpus_caption_and_label_readers(
        tmp_path, codec, text):
    data = text.encode(codec)
    assert sniff_wide_encoding(data) == codec
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(data)
    with pytest.raises(CharRNNError, match=f"looks like {codec.upper()} text; pass --encoding {codec}$"):
        list(iter_text(corpus))
    assert "".join(iter_text(corpus, codec)) == text  # and the name it gives is the one that reads it
    iconv = codec.upper().replace("-LE", "LE").replace("-BE", "BE")
    for read, labels in ((read_captions, "captions.tsv"), (read_lines, "labels.tsv")):
        root = tmp_path / labels.removesuffix(".tsv")
        root.mkdir()
        (root / labels).write_bytes(data)
        message = f"{labels} is {codec.upper()} text, not UTF-8; re-save it as UTF-8 (e.g. iconv -f {iconv} -t UTF-8)"
        with pytest.raises(CharRNNError, match=f"^{re.escape(message)}$"):
            read(root)


@pytest.mark.parametrize("text, codec", [("héllo wörld\n" * 50, "utf-8"), ("héllo wörld\n" * 50, "latin-1"),
                                         ("a.png\tcat\n", "cp1252"), ("我们一起去学校。今天天气很好。\n" * 3, "utf-8")])
def test_8bit_and_utf8_text_is_never_taken_for_utf16(text, codec):
    data = text.encode(codec)
    assert sniff_wide_encoding(data) is None
    assert sniff_wide_encoding(b"\0" * 64 + data) is None  # NUL padding is not a byte order


def test_chinese_utf16_is_not_named_with_the_wrong_byte_order():
    # 一 (U+4E00) is 00 4E in UTF-16-LE: a tenth of the text puts NULs where UTF-16-BE has its Latin letters.
    assert sniff_wide_encoding("一二三四五六七八九十".encode("utf-16-le")) is None


def test_subset_keeps_every_aligned_list_and_leaves_an_absent_one_absent():
    split = CaptionSplit(Path("ds"), ["a", "b", "c"], [["x"], ["y"], ["z"]], None, [("f", 1), ("f", 2), ("f", 3)])
    part = split.subset([2, 0])
    assert part == CaptionSplit(Path("ds"), ["c", "a"], [["z"], ["x"]], None, [("f", 3), ("f", 1)])
    grouped = CaptionSplit(Path("ds"), ["a", "b"], [["x"], ["y"]], ["g", "h"], [("f", 1), ("f", 2)])
    assert grouped.subset([1]).groups == ["h"] and len(grouped.subset([])) == 0
    lines = LineSplit(Path("ds"), ["a", "b"], ["hi", "yo"], [("l", 1), ("l", 2)])
    assert lines.subset([1]) == LineSplit(Path("ds"), ["b"], ["yo"], [("l", 2)])


def test_relabel_names_the_val_dir_in_bad_rows_and_origins():
    split = LineSplit(Path("v"), ["a"], ["hi"], [("labels.tsv", 3)])
    bad = relabel("val", [BadRow("labels.tsv", 4, "empty transcript for b")], [split, None])
    assert split.origins == [("val/labels.tsv", 3)]
    assert bad_rows_message(bad) == "val/labels.tsv line 4: empty transcript for b; fix it or pass --skip-bad"


@pytest.mark.parametrize("shape", [(32, 0), (7, 123456), (1, 1)])
def test_npy_header_is_a_fixed_size_header_numpy_reads(tmp_path, shape):
    header = npy_header(shape, fortran_order=True)
    assert len(header) % 64 == 0
    path = tmp_path / "a.npy"
    path.write_bytes(header + bytes(shape[0] * shape[1]))
    array = np.load(path, mmap_mode="r")
    assert array.shape == shape and array.dtype == np.uint8 and array.flags.f_contiguous
