"""Line datasets in each layout, split rules, bad rows, line decoding and the line cache.

The IAM fixture (tests/fixtures/iam: ascii/lines.txt and lines/) is committed; `python tests/test_ctc_data.py`
draws it again. Everything else is written here, in tmp_path.
"""

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from charrnn.core.errors import CharRNNError
from charrnn.ctc.data import cache_lines, frames_needed, load_line_image, read_lines

IAM = Path(__file__).parent / "fixtures" / "iam"
RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"
IAM_LINES = {  # line id -> (segmentation result, transcript as IAM writes it)
    "a01-000u-00": ("ok", "A|MOVE|to|stop"),
    "a01-000u-01": ("err", "Mr.|Gaitskell"),
    "a01-000u-02": ("ok", "from|nominating"),
    "b02-001-00": ("ok", "any|more"),
    "b02-001-01": ("ok", "life|Peers|."),
}


def quarter(width: int) -> int:  # a CNN that halves the width twice
    return width // 4


def write_iam_fixture(root: Path = IAM) -> None:
    """IAM's layout and format, a few KB: ascii/lines.txt and one grayscale PNG per line, drawn with
    Pillow's default font on light grey paper as IAM's scans are."""
    header = ("#--- lines.txt ---------------------------------------------------------------#\n"
              "#\n# iam database line information (a tiny stand-in drawn for charrnn's tests)\n#\n"
              "# format: a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop|Mr.|Gaitskell|from\n#\n")
    rows = [f"{i} {ok} 154 19 408 746 1661 89 {text}\n" for i, (ok, text) in IAM_LINES.items()]
    (root / "ascii").mkdir(parents=True, exist_ok=True)
    (root / "ascii" / "lines.txt").write_text(header + "".join(rows))
    font = ImageFont.load_default()
    for line_id, (_, text) in IAM_LINES.items():
        a, b, _ = line_id.split("-")
        path = root / "lines" / a / f"{a}-{b}" / f"{line_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = text.replace("|", " ")
        im = Image.new("L", (int(font.getlength(text)) + 8, 16), 235)
        ImageDraw.Draw(im).text((4, 1), text, fill=20, font=font)
        im.save(path, optimize=True)


def save_line(path, w, h=8, ink_right=True):
    """White paper, black ink in the rightmost quarter: shows inversion, and that squeezing keeps the end."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((h, w), 255, dtype=np.uint8)
    if ink_right:
        pixels[:, w - max(w // 4, 1):] = 0
    Image.fromarray(pixels).save(path)


def make_tsv(root, rows, header="filename\ttranscript\n", widths=None):
    """labels.tsv from (file, transcript) rows, each image `widths[file]` (default 40) by 8 pixels; no image
    for missing.png or a path leaving the folder."""
    for name, _ in rows:
        if name != "missing.png" and ".." not in name:
            save_line(root / name, (widths or {}).get(name, 40))
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.tsv").write_text(header + "".join(f"{f}\t{t}\n" for f, t in rows), encoding="utf-8")
    return root


def zip_folder(folder, zip_path, inside):
    with zipfile.ZipFile(zip_path, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, f"{inside}/{p.relative_to(folder).as_posix()}")
    return zip_path


# ----- layouts ---------------------------------------------------------------------------------------------

GENERIC = [("a.png", "hello world"), ("sub/b.png", " leading space kept"), ("sub/deep/c.png", "x|y stays")]


def test_generic_directory_reads_transcripts_as_written(tmp_path):
    root = make_tsv(tmp_path / "ds", GENERIC)
    (root / "labels.tsv").write_bytes(b"\xef\xbb\xbf" + (root / "labels.tsv").read_bytes().replace(b"\n", b"\r\n"))
    data = read_lines(root, val_frac=0)
    assert data.format == "tsv" and data.val is None and data.skipped == [] and data.unseen == {}
    assert data.train.files == ["a.png", "sub/b.png", "sub/deep/c.png"]
    assert data.train.texts == ["hello world", " leading space kept", "x|y stays"]  # | is a space only in IAM
    assert data.train.origins == [("labels.tsv", 2), ("labels.tsv", 3), ("labels.tsv", 4)]  # after the header
    assert data.split_rule == "no validation set (val_frac 0)"


def test_generic_zip_of_a_folder_reads_and_decodes_like_the_folder(tmp_path):
    folder = make_tsv(tmp_path / "ds", GENERIC, header="")
    archive = zip_folder(folder, tmp_path / "ds.zip", "lines")
    plain, zipped = read_lines(folder, val_frac=0).train, read_lines(archive, val_frac=0).train
    assert zipped.root == archive
    assert zipped.files == [f"lines/{f}" for f in plain.files]
    assert zipped.texts == plain.texts and zipped.origins[0] == ("lines/labels.tsv", 1)
    a = cache_lines(plain, tmp_path / "plain", height=8, max_width=64, frames=lambda w: w)
    b = cache_lines(zipped, tmp_path / "zipped", height=8, max_width=64, frames=lambda w: w)
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.offsets, b.offsets)


def make_lines_set(root):
    make_tsv(root / "train", [(f"{k}.png", t) for k, t in enumerate(["abc", "cab", "bca"])])
    make_tsv(root / "val", [("0.png", "abzz"), ("1.png", "cz")])
    make_tsv(root / "val-heldout", [("0.png", "q")])
    return root


def test_make_lines_set_trains_on_train_and_validates_on_val(tmp_path):
    data = read_lines(make_lines_set(tmp_path / "set"))
    assert data.format == "tsv"
    assert data.train.files == ["train/0.png", "train/1.png", "train/2.png"]
    assert data.val.files == ["val/0.png", "val/1.png"] and data.val.origins[0] == ("val/labels.tsv", 2)
    assert data.split_rule.startswith("val/ of the make-lines set")
    assert data.unseen == {"z": 3}  # the model never sees a z in training


def test_val_dir_replaces_the_val_part(tmp_path):
    root = make_lines_set(tmp_path / "set")
    data = read_lines(root, val_dir=root / "val-heldout")
    assert len(data.train) == 3 and data.val.texts == ["q"]
    assert data.val.origins == [(f"{root / 'val-heldout'}/labels.tsv", 2)]  # not to be mistaken for val/
    assert "--val-dir" in data.split_rule and data.unseen == {"q": 1}


def iam_copy(tmp_path, layout):
    """The committed fixture as IAM's two archives unpack (ascii/ beside lines/), or lines.txt beside lines/."""
    root = tmp_path / "iam"
    shutil.copytree(IAM, root)
    if layout == "beside":
        (root / "ascii" / "lines.txt").rename(root / "lines.txt")
        (root / "ascii").rmdir()
    return root


@pytest.mark.parametrize("layout", ["ascii", "beside"])
def test_iam_lines_with_words_joined_by_spaces(tmp_path, layout):
    data = read_lines(iam_copy(tmp_path, layout), val_frac=0)
    label = "ascii/lines.txt" if layout == "ascii" else "lines.txt"
    assert data.format == "iam" and data.skipped == []
    assert data.train.files[0] == "lines/a01/a01-000u/a01-000u-00.png"
    assert data.train.files[3] == "lines/b02/b02-001/b02-001-00.png"
    assert data.train.texts == ["A MOVE to stop", "Mr. Gaitskell", "from nominating", "any more", "life Peers ."]
    assert data.train.origins[0] == (label, 7)  # after IAM's six comment lines
    lines = cache_lines(data.train, tmp_path / "cache", height=16, max_width=400, frames=quarter)
    assert len(lines) == 5 and lines.pixels.shape[0] == 16


def test_iam_ok_only_drops_lines_whose_word_segmentation_failed(tmp_path):
    data = read_lines(IAM, val_frac=0, iam_ok_only=True)
    assert "Mr. Gaitskell" not in data.train.texts and len(data.train) == 4


def test_iam_from_a_zip_and_split_by_whole_forms(tmp_path):
    archive = zip_folder(IAM, tmp_path / "iam.zip", "IAM")
    data = read_lines(archive, val_frac=0.4, seed=1)
    forms = [{f.rsplit("/", 1)[0] for f in part.files} for part in (data.train, data.val)]
    assert forms[0] and forms[1] and not forms[0] & forms[1]  # no page on both sides
    assert "whole forms (1 of 2)" in data.split_rule


# ----- split and characters --------------------------------------------------------------------------------

def test_seeded_split_is_reproducible_and_disjoint(tmp_path):
    root = make_tsv(tmp_path / "ds", [(f"{k}.png", f"line {k}") for k in range(10)])
    a, b = read_lines(root, val_frac=0.2, seed=3), read_lines(root, val_frac=0.2, seed=3)
    assert a.val.files == b.val.files and len(a.val) == 2 and len(a.train) == 8
    assert sorted(a.train.files + a.val.files) == sorted(f"{k}.png" for k in range(10))
    assert a.split_rule == "a seeded 20% of the lines: 2 of 10 (seed 3)"
    assert read_lines(root, val_frac=0.2, seed=4).val.files != a.val.files


# ----- bad rows --------------------------------------------------------------------------------------------

def test_every_bad_row_found_while_reading_names_its_line(tmp_path):
    root = make_tsv(tmp_path / "ds", [("ok.png", "fine"), ("missing.png", "x"), ("blank.png", "   "),
                                      ("../escape.png", "x"), ("ok.png", "again"), ("two.png", "fine too")])
    with open(root / "labels.tsv", "a") as f:
        f.write("no tab here\nx.png\tone\ttoo many\n")
    with pytest.raises(CharRNNError, match=r"6 bad rows: labels.tsv line 3: missing.png does not exist; "
                                           r"labels.tsv line 4: empty transcript .*\(and 4 more\).*--skip-bad"):
        read_lines(root)
    data = read_lines(root, val_frac=0, skip_bad=True)
    assert data.train.files == ["ok.png", "two.png"] and data.train.texts == ["fine", "fine too"]
    reasons = {b.line: b.reason for b in data.skipped}
    assert all(b.file == "labels.tsv" for b in data.skipped) and sorted(reasons) == [3, 4, 5, 6, 8, 9]
    assert "not a relative path" in reasons[5] and "also listed at labels.tsv line 2" in reasons[6]
    assert reasons[8].startswith("no TAB") and reasons[9].startswith("2 TABs")


def test_iam_bad_rows_name_lines_txt_and_its_line(tmp_path):
    root = iam_copy(tmp_path, "ascii")
    with open(root / "ascii" / "lines.txt", "a") as f:
        f.write("c03-002-00 ok 154 19 408 746 1661 89 no|image\n"
                "c03-002-01 ok 154 19 408 746 the|columns|are|short\n")
    data = read_lines(root, val_frac=0, skip_bad=True)
    assert len(data.train) == 5
    assert [(b.file, b.line) for b in data.skipped] == [("ascii/lines.txt", 12), ("ascii/lines.txt", 13)]
    assert data.skipped[0].reason == "lines/c03/c03-002/c03-002-00.png does not exist"
    assert data.skipped[1].reason.startswith("expected 'a01-000u-00 ok|err")


def test_utf16_labels_are_refused_with_the_fix(tmp_path):
    root = make_tsv(tmp_path / "ds", GENERIC)
    (root / "labels.tsv").write_text("a.png\thello\n", encoding="utf-16")
    with pytest.raises(CharRNNError, match="UTF-16 text, not UTF-8.*iconv"):
        read_lines(root)


def test_no_labels_says_what_it_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CharRNNError, match="labels.tsv.*make-lines.*lines.txt"):
        read_lines(tmp_path / "empty")


def test_hello_needs_six_frames():
    assert frames_needed("hello") == 6 and frames_needed("helo") == 4 and frames_needed("aaa") == 5


def test_bad_rows_found_while_caching_undecodable_and_too_narrow(tmp_path):
    rows = [("wide.png", "hello"), ("narrow.png", "hello"), ("narrow2.png", "helo"), ("junk.png", "x")]
    root = make_tsv(tmp_path / "ds", rows, widths={"wide.png": 24, "narrow.png": 20, "narrow2.png": 20})
    (root / "junk.png").write_bytes(b"not a png")
    split = read_lines(root, val_frac=0).train
    cache = tmp_path / "cache" / "lines"
    with pytest.raises(CharRNNError, match=r"2 bad rows: labels.tsv line 3: narrow.png is too narrow at height 8: "
                                           r"20 pixels wide gives 5 CTC frames.*needs 6.*line 5: junk.png"):
        cache_lines(split, cache, height=8, max_width=64, frames=quarter)
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written left behind
    lines = cache_lines(split, cache, height=8, max_width=64, frames=quarter, skip_bad=True)
    assert lines.kept == [0, 2] and lines.split.files == ["wide.png", "narrow2.png"]  # 5 frames spell "helo"
    assert [(b.file, b.line) for b in lines.skipped] == [("labels.tsv", 3), ("labels.tsv", 5)]
    assert list(lines.widths()) == [24, 20]
    with pytest.raises(CharRNNError, match="--skip-bad"):  # a cache made with skip_bad is no way around it
        cache_lines(split, cache, height=8, max_width=64, frames=quarter)


@pytest.mark.parametrize("w, h", [(1, 32), (3, 32), (1, 10000)])
def test_a_tiny_or_very_tall_line_is_a_too_narrow_row_not_a_crash(tmp_path, w, h):
    from charrnn.ctc.model import frames

    root = tmp_path / "ds"
    root.mkdir()
    Image.new("L", (w, h), 255).save(root / "tiny.png")
    Image.new("L", (200, 32), 255).save(root / "ok.png")
    (root / "labels.tsv").write_text("tiny.png\tab\nok.png\tab\n")
    split = read_lines(root, val_frac=0).train
    width = w if h == 32 else 1  # 1x10000 at height 32: 0.0032 pixels, at least 1
    with pytest.raises(CharRNNError, match=rf"^labels.tsv line 1: tiny.png is too narrow at height 32: {width} "
                                           r"pixels wide gives 0 CTC frames, but its 2-character transcript needs 2; "
                                           r"check the image: a line of text is wider than it is tall; fix it"):
        cache_lines(split, tmp_path / "c", height=32, max_width=1600, frames=frames)
    assert cache_lines(split, tmp_path / "c", height=32, max_width=1600, frames=frames, skip_bad=True).kept == [1]


@pytest.mark.parametrize("w, h", [(1, 32), (2, 32), (3, 32), (1, 10000)])
def test_decoding_a_line_narrower_than_the_reader_pads_it_with_paper(tmp_path, w, h):
    from typer.testing import CliRunner

    from charrnn.cli import app
    from charrnn.ctc.decode import lines_from_files

    Image.new("L", (w, h), 0).save(tmp_path / "tiny.png")  # all ink, so the padding is told apart
    images = lines_from_files([tmp_path / "tiny.png"], 32, 1600)
    assert images.pixels.shape == (32, 4) and list(images.offsets) == [0, 4]  # the reader's narrowest: 4 pixels
    width = max(round(w * 32 / h), 1)
    assert (images.pixels[:, :width] == 255).all() and (images.pixels[:, width:] == 0).all()
    r = CliRunner().invoke(app, ["ctc", "decode", str(RELEASE / "ctc.pt"), str(tmp_path / "tiny.png"), "--json"])
    assert r.exit_code == 0, r.output


def test_squeezed_line_too_narrow_suggests_max_width(tmp_path):
    root = make_tsv(tmp_path / "ds", [("a.png", "a long transcript")], widths={"a.png": 400})
    split = read_lines(root, val_frac=0).train
    with pytest.raises(CharRNNError, match="raise --max-width"):
        cache_lines(split, tmp_path / "c", height=8, max_width=32, frames=quarter)


# ----- decoding --------------------------------------------------------------------------------------------

def test_height_normalised_aspect_kept_and_ink_high(tmp_path):
    save_line(tmp_path / "a.png", 100, 20)
    line = load_line_image(tmp_path / "a.png", 10, 1000)
    assert line.shape == (10, 50) and line.dtype == np.uint8
    assert (line[:, 0] == 0).all() and (line[:, -1] == 255).all()  # paper 0, ink high


def test_wide_line_is_squeezed_not_cropped(tmp_path):
    save_line(tmp_path / "a.png", 400, 20)
    line = load_line_image(tmp_path / "a.png", 10, 40)
    assert line.shape == (10, 40)
    assert (line[:, -5:] > 200).all() and (line[:, :25] < 50).all()  # the last quarter is still ink


def test_transparency_is_paper_and_exif_rotation_applied(tmp_path):
    rgba = np.zeros((8, 32, 4), dtype=np.uint8)  # transparent black paper: dropping alpha would make it ink
    rgba[:, 24:] = (0, 0, 0, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    assert (load_line_image(tmp_path / "t.png", 8, 64)[:, :20] == 0).all()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40x10, shown rotated a quarter turn: 10 wide, 40 tall
    Image.new("L", (40, 10), 255).save(tmp_path / "r.png", exif=exif)
    assert load_line_image(tmp_path / "r.png", 20, 64).shape == (20, 5)


def test_sixteen_bit_grayscale_is_not_clipped_to_white(tmp_path):
    Image.fromarray(np.full((8, 16), 32768, dtype=np.uint16)).save(tmp_path / "g.png")
    assert abs(int(load_line_image(tmp_path / "g.png", 8, 64)[0, 0]) - 127) <= 1


def test_batch_pads_with_zeros_and_returns_widths(tmp_path):
    root = make_tsv(tmp_path / "ds", [("a.png", "ab"), ("b.png", "abc")], widths={"a.png": 12, "b.png": 30})
    lines = cache_lines(read_lines(root, val_frac=0).train, tmp_path / "c", height=8, max_width=64, frames=quarter)
    assert list(lines.offsets) == [0, 12, 42]
    x, widths = lines.batch([1, 0])
    assert x.shape == (2, 8, 30) and x.dtype == np.uint8 and list(widths) == [30, 12]
    assert np.array_equal(x[1, :, :12], load_line_image(root / "a.png", 8, 64))
    assert (x[1, :, 12:] == 0).all() and x[1, :, 9:12].min() == 255  # its ink ends at 12, then padding


# ----- the cache -------------------------------------------------------------------------------------------

def test_cache_is_reused_then_rebuilt_when_an_image_or_frames_change(tmp_path):
    root = make_tsv(tmp_path / "ds", [("a.png", "ab"), ("b.png", "cd")])
    split = read_lines(root, val_frac=0).train
    first = cache_lines(split, tmp_path / "c", height=8, max_width=64, frames=quarter)
    again = cache_lines(split, tmp_path / "c.npy", height=8, max_width=64, frames=quarter)
    assert not first.reused and again.reused and isinstance(again.pixels, np.memmap)
    assert np.array_equal(first.pixels, again.pixels)
    save_line(root / "b.png", 48)
    changed = cache_lines(split, tmp_path / "c", height=8, max_width=64, frames=quarter)
    assert not changed.reused and list(changed.widths()) == [40, 48]
    assert not cache_lines(split, tmp_path / "c", height=8, max_width=64, frames=lambda w: w // 2).reused
    assert not cache_lines(split, tmp_path / "c", height=4, max_width=64, frames=quarter).reused


if __name__ == "__main__":
    write_iam_fixture()
