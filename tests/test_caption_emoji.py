"""The emoji caption dataset: the pure rules (groups, names, splits), the writer with a stand-in renderer,
the font renderer where Noto Color Emoji is installed, and the bundled corpora/emoji.zip.

CI has neither the font nor the `emoji` package: only the renderer test needs the font, and nothing here
needs the package.
"""

import io
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import pytest
from PIL import Image

from charrnn.caption.emoji import (
    Emoji,
    EmojiRenderer,
    alias_words,
    code_points,
    emoji_names,
    find_font,
    group_of,
    load_aliases,
    make_emoji_dataset,
    parse_emoji_test,
    split_grouped,
    split_random,
    to_square_rgb,
    write_dataset,
)
from charrnn.core.errors import CharRNNError

BUNDLED = Path(__file__).resolve().parents[1] / "corpora" / "emoji.zip"
TONES = ["", "\U0001F3FB", "\U0001F3FC", "\U0001F3FD", "\U0001F3FE", "\U0001F3FF"]
MALE, FEMALE, ZWJ, VS16 = "\u2642\ufe0f", "\u2640\ufe0f", "\u200d", "\ufe0f"


def test_file_stem_is_lower_hex_code_points():
    assert code_points("\U0001F926\U0001F3FB\u200d\u2642\ufe0f") == "1f926-1f3fb-200d-2642-fe0f"


def test_skin_tones_share_the_group_of_their_base():
    assert {group_of("\U0001F44D" + tone) for tone in TONES} == {"1f44d"}  # thumbs up and its 5 tones


def test_genders_tones_and_hair_share_a_group():
    facepalm = "\U0001F926"
    variants = [facepalm + tone + ZWJ + sign for tone in TONES for sign in (MALE, FEMALE)] + [facepalm]
    assert {group_of(v) for v in variants} == {group_of(facepalm)}
    health = {group_of(p + tone + ZWJ + "\u2695\ufe0f") for p in ("\U0001F468", "\U0001F469", "\U0001F9D1")
              for tone in TONES}
    assert health == {"1f9d1-200d-2695"}  # man, woman, person health worker
    assert group_of("\U0001F469\U0001F3FD\u200d\U0001F9B0") == group_of("\U0001F9D1")  # woman: red hair


def test_different_pictures_keep_different_groups():
    assert group_of("\U0001F44D") != group_of("\U0001F44E")  # thumbs up, thumbs down
    assert group_of("\U0001F408\u200d\u2b1b") != group_of("\U0001F408")  # black cat, cat
    assert group_of("\u2642\ufe0f") == "2642"  # a lone male sign is not emptied by the gender rule


def test_pictures_encoded_twice_share_a_group():
    kiss = "\U0001F469\u200d\u2764\ufe0f\u200d\U0001F48B\u200d\U0001F468"  # kiss: woman, man
    assert group_of(kiss) == group_of("\U0001F48F") == group_of("\U0001F48F\U0001F3FB")
    assert group_of("\U0001F46C") == group_of("\U0001F9D1\U0001F3FB\u200d\U0001F91D\u200d\U0001F9D1\U0001F3FF")


def test_alias_words():
    assert alias_words(":man_facepalming:") == "man facepalming"
    assert alias_words(":+1:") == "+1"
    assert alias_words(":flag_for_St._Kitts_&_Nevis:") == "flag for St. Kitts & Nevis"


def test_names_start_with_cldr_and_hold_no_repeats():
    names = emoji_names("\U0001F44D", "thumbs up", [":thumbsup:", ":+1:", ":thumbs_up:"])
    assert names == ("thumbs up", "thumbsup", "+1", "thumbs up sign")  # last: unicodedata's THUMBS UP SIGN
    assert emoji_names("\U0001F600", "grinning face", []) == ("grinning face",)  # GRINNING FACE is a repeat
    assert emoji_names("\U0001F1EB\U0001F1F7", "flag: France", [":fr:"]) == ("flag: France", "fr")


def test_parse_emoji_test_keeps_fully_qualified_with_cldr_names():
    lines = ["# subgroup: hand-fingers-closed",
             "1F44D                                  ; fully-qualified     # 👍 E0.6 thumbs up",
             "1F44D 1F3FB                            ; fully-qualified     # 👍🏻 E1.0 thumbs up: light skin tone",
             "263A                                   ; unqualified         # ☺ E0.6 smiling face",
             "1F3FB                                  ; component           # 🏻 E1.0 light skin tone",
             "1F468 200D 1F469 200D 1F467 ; fully-qualified # 👨‍👩‍👧 E2.0 family: man, woman, girl",
             ""]
    assert parse_emoji_test(lines) == [("\U0001F44D", "thumbs up"),
                                       ("\U0001F44D\U0001F3FB", "thumbs up: light skin tone"),
                                       ("\U0001F468\u200d\U0001F469\u200d\U0001F467", "family: man, woman, girl")]


def test_splits_are_seeded_and_groups_stay_together():
    files = [f"images/{i}.png" for i in range(200)]
    groups = {f: f"g{i // 7}" for i, f in enumerate(files)}  # 29 groups of up to 7
    assert split_random(files, seed=1) == split_random(files, seed=1) != split_random(files, seed=2)
    assert sum(v == "val" for v in split_random(files, seed=1).values()) == 20
    grouped = split_grouped(groups, seed=1)
    assert grouped == split_grouped(groups, seed=1)
    sides = defaultdict(set)
    for f, side in grouped.items():
        sides[groups[f]].add(side)
    assert all(len(s) == 1 for s in sides.values())
    assert 14 <= sum(v == "val" for v in grouped.values()) <= 20


def test_to_square_rgb_centres_on_white():
    glyph = Image.new("RGBA", (10, 20), (255, 0, 0, 255))
    square = to_square_rgb(glyph, 8)
    assert square.mode == "RGB" and square.size == (8, 8)
    assert square.getpixel((0, 4)) == (255, 255, 255)  # the side margins are white, not transparent black
    assert square.getpixel((4, 4))[0] > 200 > square.getpixel((4, 4))[1]


def fake_render(text: str):
    """A red square for every emoji except 'x', which the 'font' cannot draw."""
    return None if text == "x" else Image.new("RGBA", (12, 10), (200, 0, 0, 255))


def test_write_dataset_with_a_stand_in_renderer(tmp_path):
    emojis = [Emoji("\U0001F44D" + t, (f"thumbs up{t and ': tone'}",)) for t in TONES]
    emojis += [Emoji("\U0001F44E", ("thumbs down", "-1")), Emoji("x", ("not drawable",))]
    seen = []
    summary = write_dataset(tmp_path, emojis, fake_render, size=16, seed=0, license_text="licence\n",
                            on_progress=lambda done, total: seen.append((done, total)))
    assert summary["images"] == 7 and summary["skipped"] == 1 and summary["groups"] == 2
    assert seen[-1] == (8, 8)
    rows = [line.split("\t") for line in (tmp_path / "captions.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["images/1f44d.png", "thumbs up"]
    assert ["images/1f44e.png", "-1"] in rows and not any("not drawable" in r[1] for r in rows)
    with Image.open(tmp_path / "images/1f44d-1f3fb.png") as im:
        assert im.mode == "RGB" and im.size == (16, 16)
    groups = dict(line.split("\t") for line in (tmp_path / "groups.tsv").read_text().splitlines())
    header, *splits = [line.split("\t") for line in (tmp_path / "splits.tsv").read_text().splitlines()]
    assert header == ["filename", "random", "grouped"]
    assert set(groups) == {r[0] for r in splits} == {r[0] for r in rows}
    assert all(r[1] in ("train", "val") and r[2] in ("train", "val") for r in splits)
    assert (tmp_path / "LICENSE-emoji.txt").read_text() == "licence\n"


def test_missing_inputs_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(CharRNNError, match="--font"):
        find_font(tmp_path / "nope.ttf")
    with pytest.raises(CharRNNError, match="--emoji-test"):
        make_emoji_dataset(tmp_path / "out", emoji_test=tmp_path / "nope.txt")
    monkeypatch.setitem(sys.modules, "emoji", None)  # as if the package were not installed
    with pytest.raises(CharRNNError, match=r"charrnn\[emoji\]"):
        load_aliases()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(CharRNNError, match="not an empty directory"):
        make_emoji_dataset(tmp_path / "full")


def test_renderer_draws_emoji_and_refuses_what_the_font_lacks():
    try:
        font = find_font(None)
    except CharRNNError:
        pytest.skip("Noto Color Emoji is not installed")
    render = EmojiRenderer(font)
    glyph = render("\U0001F44D\U0001F3FD")  # thumbs up: medium skin tone, a ligature
    assert glyph is not None and glyph.mode == "RGBA" and 100 < glyph.height <= 128
    assert render("\ue001") is None  # private use: the blank .notdef
    assert render("\U0001F1FD\U0001F1FE") is None  # no such region: the "unknown flag" glyph
    assert render("\U0001F426\u200d\U0001F34B") is None  # bird ZWJ lemon is no emoji: two glyphs


# --- the bundled dataset ---------------------------------------------------------------------------------

def read_tsv(z: zipfile.ZipFile, name: str) -> list[list[str]]:
    return [line.split("\t") for line in z.read(name).decode("utf-8").splitlines()]


@pytest.fixture(scope="module")
def bundled():
    if not BUNDLED.exists():
        pytest.skip("corpora/emoji.zip is not in this checkout")
    with zipfile.ZipFile(BUNDLED) as z:
        yield z


def test_bundled_captions_parse_and_name_existing_pngs(bundled):
    names = set(bundled.namelist())
    assert {"captions.tsv", "groups.tsv", "splits.tsv", "LICENSE-emoji.txt"} <= names
    assert all(n.startswith("images/") and n.endswith(".png") for n in names - {"captions.tsv", "groups.tsv",
                                                                                 "splits.tsv", "LICENSE-emoji.txt"})
    lines = bundled.read("captions.tsv").decode("utf-8").splitlines()
    assert all(line.count("\t") == 1 for line in lines)
    rows = [line.split("\t") for line in lines]
    assert all(caption.strip() for _, caption in rows)
    files = sorted({f for f, _ in rows})
    assert set(files) == {n for n in names if n.startswith("images/")}
    assert dict(rows[:1]) == {"images/1f600.png": "grinning face"}  # CLDR order, CLDR name first
    with Image.open(io.BytesIO(bundled.read(files[0]))) as im:
        size = im.size
    for f in files[:: max(1, len(files) // 20)]:  # a sample of about 20, spread over the list
        with Image.open(io.BytesIO(bundled.read(f))) as im:
            im.load()
            assert im.format == "PNG" and im.mode == "RGB" and im.size == size and size[0] == size[1]


def test_bundled_groups_and_splits_cover_every_image(bundled):
    files = {f for f, _ in read_tsv(bundled, "captions.tsv")}
    groups = dict(read_tsv(bundled, "groups.tsv"))
    header, *rows = read_tsv(bundled, "splits.tsv")
    assert header == ["filename", "random", "grouped"]
    splits = {f: (random_side, grouped_side) for f, random_side, grouped_side in rows}
    assert set(groups) == set(splits) == files
    sides = defaultdict(set)
    for f, (_, grouped_side) in splits.items():
        sides[groups[f]].add(grouped_side)
    assert all(len(s) == 1 for s in sides.values()), "a group straddles the grouped split"
    thumbs = [f for f in files if f.startswith("images/1f44d")]
    assert len(thumbs) == 6 and {groups[f] for f in thumbs} == {"1f44d"}
    for column in (0, 1):
        share = sum(sides_[column] == "val" for sides_ in splits.values()) / len(splits)
        assert 0.08 <= share <= 0.12
