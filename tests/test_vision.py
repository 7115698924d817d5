"""What the image tasks share (charrnn.vision) and the one text sniffer every reader uses (charrnn.core.text)."""

import json
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from charrnn.caption.data import CaptionSplit, cache_images, decode_image, read_captions
from charrnn.core.errors import CharRNNError
from charrnn.core.rows import BadRow, bad_rows_message
from charrnn.core.text import iter_text, sniff_wide_encoding
from charrnn.ctc.data import LineSplit, cache_lines, load_line_image, read_lines
from charrnn.vision.cache import npy_header
from charrnn.vision.dataset import relabel
from charrnn.vision.image import MAX_PIXELS

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"


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


# ----- decoding: decompression bombs, 16-bit grey --------------------------------------------------------

def declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height grey pixels but whose data holds one row: a few hundred
    bytes. What a decoder does before reading the pixels (the header) is all a size check may look at; a
    30000x30000 single-colour PNG made whole is under a megabyte and 900 MB decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = zlib.compress(b"\0" + b"\xff" * width)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# Above Pillow's own refusal (twice its 89.5 Mpx), refused as it opens; and above ours only, where Pillow
# would print a DecompressionBombWarning and decode it.
BOMBS = {"bomb.png": (30000, 30000, "900,000,000"), "big.png": (12000, 10000, "12000x10000 = 120,000,000")}


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning would fail the test
        yield


@pytest.mark.usefixtures("no_warnings")
@pytest.mark.parametrize("name", list(BOMBS))
def test_an_image_with_too_many_pixels_is_a_bad_row_at_its_label_line(tmp_path, name):
    width, height, size = BOMBS[name]
    assert width * height > MAX_PIXELS
    captions, lines = tmp_path / "captions", tmp_path / "lines"
    for root, labels in ((captions, "captions.tsv"), (lines, "labels.tsv")):
        Image.new("L", (40, 8), 255).save(declared_png(root / name, width, height).with_name("ok.png"))
        (root / labels).write_text(f"ok.png\tfine\n{name}\tbig\n")
    caption_split = read_captions(captions, val_frac=0).train
    line_split = read_lines(lines, val_frac=0).train
    said = rf"{name} is {re.escape(size)} pixels, more than the 100,000,000 charrnn decodes .*; shrink it"
    with pytest.raises(CharRNNError, match=rf"^captions.tsv line 2: {said}; fix it or pass --skip-bad$"):
        cache_images(caption_split, tmp_path / "c1", size=8)
    with pytest.raises(CharRNNError, match=rf"^labels.tsv line 2: {said}; fix it or pass --skip-bad$"):
        cache_lines(line_split, tmp_path / "c2", height=8, max_width=64, frames=lambda w: w // 4)
    images = cache_images(caption_split, tmp_path / "c1", size=8, skip_bad=True)
    assert images.kept == [0] and [(b.file, b.line) for b in images.skipped] == [("captions.tsv", 2)]
    lines_kept = cache_lines(line_split, tmp_path / "c2", height=8, max_width=64, frames=lambda w: w // 4,
                             skip_bad=True)
    assert lines_kept.kept == [0] and [(b.file, b.line) for b in lines_kept.skipped] == [("labels.tsv", 2)]


@pytest.mark.usefixtures("no_warnings")
@pytest.mark.parametrize("name", list(BOMBS))
def test_an_image_with_too_many_pixels_on_the_command_line_is_one_line(tmp_path, name):
    from charrnn.cli import app

    width, height, size = BOMBS[name]
    image = declared_png(tmp_path / name, width, height)
    for command in (["caption", "sample", RELEASE / "caption.pt", image], ["ctc", "decode", RELEASE / "ctc.pt", image]):
        r = CliRunner().invoke(app, [str(a) for a in command])
        assert r.exit_code == 2 and "Traceback" not in r.output and "Warning" not in r.output, r.output
        assert r.stderr.strip() == (f"error: {str(image)!r} is {size} pixels, more than the 100,000,000 charrnn "
                                    "decodes (an image that large is a decompression bomb or far more than a model "
                                    "sees); shrink it"), r.stderr


def test_sixteen_bit_grey_keeps_its_levels_in_both_decoders(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1))  # dark left, white right
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode.startswith("I")
    expected = ramp[0].astype(float) / 256  # the 8-bit levels of the same ramp
    with open(tmp_path / "ramp.png", "rb") as f:
        rgb = decode_image(f, 64)
    assert np.array_equal(rgb[..., 0], rgb[..., 2]) and np.abs(rgb[0, :, 1] - expected).max() <= 1.5
    line = 255 - load_line_image(tmp_path / "ramp.png", 64, 256)  # ink high: inverted back to levels
    assert np.abs(line[0].astype(float) - expected).max() <= 1.5


# ----- the decode cache -----------------------------------------------------------------------------------

def _tamper(sidecar: Path, edit) -> None:
    meta = json.loads(sidecar.read_text())
    edit(meta)
    sidecar.write_text(json.dumps(meta))


TAMPERINGS = {
    "an index past the end": lambda m: m["kept"].__setitem__(-1, 99),
    "indices out of order": lambda m: m["kept"].reverse(),
    "a kept item also skipped": lambda m: m["skipped"].append({"file": "x", "line": 1, "reason": "r"}),
    "a skipped row that is not one": lambda m: m.__setitem__("skipped", [{"x": 1}]),
    "kept as text": lambda m: m.__setitem__("kept", "all"),
    "a line of no width; an image at -1": lambda m: (m["offsets"].__setitem__(1, 0) if "offsets" in m
                                                      else m["kept"].__setitem__(0, -1)),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_a_sidecar_that_does_not_match_its_array_means_no_cache(tmp_path, tampering):
    captions = read_captions(RELEASE / "captions", val_frac=0).train.subset(range(3))
    lines = read_lines(RELEASE / "lines", val_frac=0).train
    first = [cache_images(captions, tmp_path / "images", size=8),
             cache_lines(lines, tmp_path / "lines", height=8, max_width=64, frames=lambda w: 4 * w)]
    for name in ("images", "lines"):
        _tamper(tmp_path / f"{name}.json", TAMPERINGS[tampering])
    again = [cache_images(captions, tmp_path / "images", size=8),
             cache_lines(lines, tmp_path / "lines", height=8, max_width=64, frames=lambda w: 4 * w)]
    for before, after in zip(first, again):
        assert not after.reused and after.kept == before.kept and np.array_equal(after.pixels, before.pixels)
    assert np.array_equal(again[1].offsets, first[1].offsets)


# ----- bad rows in one list ---------------------------------------------------------------------------------

def test_label_and_image_problems_are_reported_together(tmp_path):
    """A missing image (found reading the labels) and an undecodable one (found only by decoding) in one
    error, not the second after the first is fixed."""
    captions, lines = tmp_path / "captions", tmp_path / "lines"
    for root, labels in ((captions, "captions.tsv"), (lines, "labels.tsv")):
        root.mkdir()
        Image.new("L", (40, 8), 255).save(root / "ok.png")
        (root / "junk.png").write_bytes(b"not a png")
        declared_png(root / "bomb.png", 30000, 30000)
        (root / labels).write_text("ok.png\tfine\nmissing.png\tgone\njunk.png\tjunk\nbomb.png\tbig\n")
    with pytest.raises(CharRNNError, match=r"^3 bad rows: captions.tsv line 2: missing.png does not exist; "
                                           r"captions.tsv line 3: junk.png is not an image .*\(and 1 more\)"):
        read_captions(captions, val_frac=0)
    with pytest.raises(CharRNNError, match=r"^3 bad rows: labels.tsv line 2: missing.png does not exist; "
                                           r"labels.tsv line 3: junk.png is not an image .*\(and 1 more\)"):
        read_lines(lines, val_frac=0)
    data = read_captions(captions, val_frac=0, skip_bad=True)  # with --skip-bad: the labels' part, then the cache's
    assert [b.line for b in data.skipped] == [2]
    assert [b.line for b in cache_images(data.train, tmp_path / "c", size=8, skip_bad=True).skipped] == [3, 4]
