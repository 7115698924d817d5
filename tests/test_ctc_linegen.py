"""Rendering text-line sets (`charrnn ctc make-lines`): the layout the line reader expects, the split the
language model uses, reproducibility, the fonts, and the user errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from charrnn.core.errors import CharRNNError
from charrnn.ctc import linegen
from charrnn.ctc.linegen import (
    SHIPPED_FONTS,
    LineFont,
    cut_line,
    draw_style,
    font_names,
    make_lines,
    read_parts,
    render_line,
)
from charrnn.lm.data import split_ids

TRAIN_WORDS = ["apple", "banana", "cherry", "damson", "elder", "fig,", "grape."]
VAL_WORDS = ["xylophone", "yak", "zebra!", "walrus"]


def two_part_text(path: Path, chars: int = 4000) -> Path:
    """A text whose first 90% uses only TRAIN_WORDS and whose last 10% only VAL_WORDS, with CRLF line ends."""
    def words(vocab, n):
        out, i = "", 0
        while len(out) < n:
            out += vocab[i % len(vocab)] + ("\r\n" if i % 5 == 4 else " ")
            i += 1
        return out[:n - 1] + " "

    path.write_bytes((words(TRAIN_WORDS, chars * 9 // 10) + words(VAL_WORDS, chars // 10)).encode("utf-8"))
    return path


@pytest.fixture
def text(tmp_path):
    return two_part_text(tmp_path / "fruit.txt")


def labels(folder: Path) -> list[tuple[str, str]]:
    return [tuple(row.split("\t")) for row in (folder / "labels.tsv").read_text(encoding="utf-8").splitlines()]


def test_layout_labels_and_settings(text, tmp_path):
    progress = []
    out = tmp_path / "lines"
    summary = make_lines(text, out, count=8, val_count=3, min_chars=10, max_chars=30,
                         on_progress=lambda done, total: progress.append((done, total)))
    assert summary.counts == {"train": 8, "val": 3, "val-heldout": 3}
    assert progress[-1] == (14, 14)
    for part, n in summary.counts.items():
        rows = labels(out / part)
        assert [name for name, _ in rows] == [f"{i:06d}.png" for i in range(n)]
        assert sorted(p.name for p in (out / part).glob("*.png")) == [name for name, _ in rows]
        for name, line in rows:
            assert 10 <= len(line) <= 30 and line == line.strip() and "  " not in line and "\r" not in line
            image = Image.open(out / part / name)
            assert image.mode == "L" and 20 <= image.height <= 100 and image.width > image.height
            pixels = np.asarray(image)
            assert pixels.min() < 110 < np.median(pixels)  # dark ink on light paper
    settings = json.loads((out / "make-lines.json").read_text())
    assert settings["complete"] and settings["seed"] == 0 and settings["val_frac"] == 0.1
    assert settings["text_sha256"] == linegen._sha256(text) and settings["parts"] == summary.counts
    assert [f["name"] for f in settings["fonts"]] == list(linegen.DEFAULT_FONTS)


def test_train_lines_from_the_first_90_percent_and_val_lines_from_the_rest(text, tmp_path):
    make_lines(text, tmp_path / "lines", count=30, val_count=10)
    for part, vocab in (("train", TRAIN_WORDS), ("val", VAL_WORDS), ("val-heldout", VAL_WORDS)):
        for _, line in labels(tmp_path / "lines" / part):
            assert set(line.split(" ")) <= set(vocab), (part, line)  # whole words, and only from its part


def test_the_split_is_the_language_models(tmp_path):
    # 1003 characters after the byte-order mark, which both drop: the boundary falls where data.split_ids puts it.
    path = tmp_path / "t.txt"
    path.write_bytes(b"\xef\xbb\xbf" + ("abc de\n" * 200)[:1003].encode())
    train, val = read_parts(path, 0.1)
    assert len(train) == len(split_ids(np.zeros(1004), 0.1)[0]) - 1 and len(train) + len(val) == 1003


def test_cut_line_takes_whole_words_within_bounds():
    rng = np.random.default_rng(0)
    text = "one two three  four\nfive six seven eight nine ten eleven twelve " * 20
    for _ in range(100):
        line = cut_line(text, rng, 8, 20)
        if line is not None:
            assert 8 <= len(line) <= 20 and f" {line} " in " " + " ".join(text.split()) + " "


def test_same_seed_same_files_other_seed_other_lines(text, tmp_path):
    runs = {name: tmp_path / name for name in ("a", "b", "c")}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        make_lines(text, runs[name], count=6, val_count=2, seed=seed)
    files = sorted(p.relative_to(runs["a"]) for p in runs["a"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(runs["b"]) for p in runs["b"].rglob("*") if p.is_file())
    assert all((runs["a"] / f).read_bytes() == (runs["b"] / f).read_bytes() for f in files)
    assert labels(runs["a"] / "train") != labels(runs["c"] / "train")


def test_workers_write_the_same_files(text, tmp_path):
    make_lines(text, tmp_path / "one", count=4, val_count=2, workers=1)
    make_lines(text, tmp_path / "two", count=4, val_count=2, workers=2)
    for part in ("train", "val", "val-heldout"):
        for name, _ in labels(tmp_path / "one" / part):
            assert (tmp_path / "one" / part / name).read_bytes() == (tmp_path / "two" / part / name).read_bytes()


def test_pillows_default_font_needs_no_files(text, tmp_path):
    summary = make_lines(text, tmp_path / "lines", count=3, val_count=1, fonts=["default"], val_fonts=[])
    assert summary.fonts == ["default"] and summary.counts == {"train": 3, "val": 1}
    assert not (tmp_path / "lines" / "val-heldout").exists()


@pytest.mark.parametrize("name", list(SHIPPED_FONTS))
def test_each_shipped_font_loads_and_draws(name):
    font = LineFont(name)
    assert font.path.is_file() and (font.path.parent / f"LICENSE-{name}.txt").is_file()
    assert font.draws("Hello, world?") and not font.draws("\u4e2d")  # a CJK character: its missing-glyph box
    rng = np.random.default_rng(0)
    pixels = np.asarray(render_line("Hello, world?", font, draw_style(rng), rng))
    assert (pixels < 128).mean() > 0.02  # ink


def test_heldout_fonts_draw_only_val_heldout(text, tmp_path, monkeypatch):
    drawn = []
    render = linegen.render_line

    def spy(line, font, *rest):
        drawn.append(font.name)
        return render(line, font, *rest)

    monkeypatch.setattr(linegen, "render_line", spy)
    make_lines(text, tmp_path / "lines", count=6, val_count=3, fonts=["caladea", "default"], val_fonts=["comic-neue"])
    assert drawn == ["caladea", "default"] * 3 + ["caladea", "default", "caladea"] + ["comic-neue"] * 3


def test_a_heldout_font_may_not_train(text, tmp_path):
    with pytest.raises(CharRNNError, match="also a training font"):
        make_lines(text, tmp_path / "lines", count=2, fonts=["comic-neue"], val_fonts=["comic-neue"])
    # The default held-out font simply drops out when it trains.
    assert make_lines(text, tmp_path / "lines", count=2, fonts=["comic-neue"]).val_fonts == []


def test_unknown_font_names_the_choices(text, tmp_path):
    with pytest.raises(CharRNNError, match="unknown font 'nosuch'.*dkg-handwriting"):
        make_lines(text, tmp_path / "lines", count=2, fonts=["nosuch"])
    with pytest.raises(CharRNNError, match="cannot load the font"):
        make_lines(text, tmp_path / "lines", count=2, fonts=[str(text)])  # a file, but not a font
    assert font_names() == ["default", *SHIPPED_FONTS]


def test_lines_hold_only_characters_the_font_draws(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("plain words here " * 40 + "Жук words here " * 40 + "plain words here " * 10, encoding="utf-8")
    summary = make_lines(path, tmp_path / "lines", count=20, val_count=2, fonts=["caladea", "default"], val_fonts=[])
    assert all("Ж" not in line for part in summary.counts for _, line in labels(tmp_path / "lines" / part))
    path.write_text("Жук жаба " * 100, encoding="utf-8")
    with pytest.raises(CharRNNError, match="font 'caladea' can draw.*it cannot draw 'Жабжку'"):
        make_lines(path, tmp_path / "other", count=2, fonts=["caladea"])


def test_text_must_be_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    with pytest.raises(CharRNNError, match="not valid utf-8"):
        make_lines(path, tmp_path / "lines", count=2)


def test_refuses_a_foreign_directory_but_replaces_its_own_output(text, tmp_path):
    out = tmp_path / "lines"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(CharRNNError, match="not empty"):
        make_lines(text, out, count=2)
    make_lines(text, out, count=5, val_count=1, overwrite=True)
    make_lines(text, out, count=2, val_count=1)  # an earlier output: replaced without asking
    assert sorted(p.name for p in (out / "train").iterdir()) == ["000000.png", "000001.png", "labels.tsv"]
    assert (out / "notes.txt").read_text() == "mine"


def test_line_length_errors_name_the_flags_the_command_has(text, tmp_path):
    with pytest.raises(CharRNNError, match=r"^--min-line-chars 9 and --max-line-chars 3 must"):
        make_lines(text, tmp_path / "lines", count=2, min_chars=9, max_chars=3)
    with pytest.raises(CharRNNError, match=r"other --min-line-chars/--max-line-chars, or fonts"):
        make_lines(text, tmp_path / "lines", count=2, min_chars=1000, max_chars=1100)  # val: 400 chars
