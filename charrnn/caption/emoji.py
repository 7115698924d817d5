"""An image-captioning dataset made from emoji: Noto Color Emoji glyphs captioned with their CLDR names.

`make_emoji_dataset(out)` renders every fully-qualified emoji that the installed font can draw and writes
a dataset in the project's generic caption layout:

    images/<code points>.png   RGB on white, size x size, e.g. images/1f926-1f3fb-200d-2642-fe0f.png
    captions.tsv               filename<TAB>caption; the first line of a file is its CLDR short name
                               ("man facepalming: light skin tone"), further lines are other names of it
    groups.tsv                 filename<TAB>group: every variant of one base emoji shares a group
    splits.tsv                 a header filename<TAB>random<TAB>grouped, then train|val per split and file,
                               fixed so that evaluation figures reproduce; "random" draws 10% of the
                               images, "grouped" 10% of whole groups (no base emoji on both sides)
    LICENSE-emoji.txt          the font's licence (SIL OFL 1.1) and the names' (Unicode License v3)

Where the names come from: the list of fully-qualified emoji and their CLDR short names are read from
Unicode's emoji-test.txt, the one source that carries the names exactly as CLDR writes them. The `emoji`
package drops their punctuation (":man_facepalming_light_skin_tone:", ":France:" for "flag: France"),
so it supplies only the further names (its aliases); Python's `unicodedata` adds the character name of
single-code-point emoji ("thumbs up sign").
"""

from __future__ import annotations

import random
import unicodedata
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from charrnn.core.errors import CharRNNError
from charrnn.core.files import atomic_write, write_text_atomic

# Where Debian/Ubuntu (fonts-noto-color-emoji), Fedora and Arch install the font.
FONT_CANDIDATES = (Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),
                   Path("/usr/share/fonts/google-noto-color-emoji-fonts/NotoColorEmoji.ttf"),
                   Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"))
FONT_COPYRIGHT = Path("/usr/share/doc/fonts-noto-color-emoji/copyright")
# Where Debian/Ubuntu's `unicode-data` installs Unicode's emoji-test.txt.
EMOJI_TEST_CANDIDATES = (Path("/usr/share/unicode/emoji/emoji-test.txt"),)
# Noto Color Emoji holds one bitmap strike (CBDT, 136x128 px); FreeType loads it only at this size.
BITMAP_SIZE = 109
VAL_FRACTION = 0.1
RULE = "-" * 72 + "\n\n"  # between the parts of LICENSE-emoji.txt

ZWJ = "\u200d"
SKIN_TONES = frozenset(map(chr, range(0x1F3FB, 0x1F400)))
VARIATION_SELECTORS = frozenset({"\ufe0e", "\ufe0f"})
# ZWJ components that only vary the emoji before them: gender signs, hair styles, facing right.
VARIANT_PARTS = frozenset({"\u2640", "\u2642", "\U0001F9B0", "\U0001F9B1", "\U0001F9B2", "\U0001F9B3", "\u27a1"})
# The gendered people fold into the gender-neutral one (man, woman -> person; boy, girl -> child; ...).
NEUTRAL_PEOPLE = str.maketrans({"\U0001F468": "\U0001F9D1", "\U0001F469": "\U0001F9D1",
                                "\U0001F466": "\U0001F9D2", "\U0001F467": "\U0001F9D2",
                                "\U0001F474": "\U0001F9D3", "\U0001F475": "\U0001F9D3"})
# Pictures of one thing that Unicode encodes twice, keyed by their form after the folding above.
SAME_AS = {
    "\U0001F9D1\u200d\u2764\u200d\U0001F48B\u200d\U0001F9D1": "\U0001F48F",  # kiss: person, person -> kiss
    "\U0001F9D1\u200d\u2764\u200d\U0001F9D1": "\U0001F491",  # couple with heart: person, person
    "\U0001F46B": "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",  # woman and man holding hands -> people ...
    "\U0001F46C": "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",  # men holding hands
    "\U0001F46D": "\U0001F9D1\u200d\U0001F91D\u200d\U0001F9D1",  # women holding hands
    "\U0001FAF1\u200d\U0001FAF2": "\U0001F91D",  # handshake with two skin tones -> handshake
    "\U0001F9D1\u200d\U0001F9D1\u200d\U0001F9D2": "\U0001F46A",  # family: adult, adult, child -> family
    "\U0001F934": "\U0001FAC5", "\U0001F478": "\U0001FAC5",  # prince, princess -> person with crown
    "\U0001F385": "\U0001F9D1\u200d\U0001F384", "\U0001F936": "\U0001F9D1\u200d\U0001F384",  # -> Mx Claus
    "\U0001F57A": "\U0001F483",  # man dancing -> woman dancing
    "\U0001F930": "\U0001FAC4", "\U0001FAC3": "\U0001FAC4",  # pregnant woman, man -> pregnant person
}

Progress = Callable[[int, int], None]  # (emoji done, emoji in all)
Render = Callable[[str], "Image.Image | None"]  # RGBA glyph cropped to its ink, or None if not drawable


@dataclass(frozen=True)
class Emoji:
    text: str
    names: tuple[str, ...]  # CLDR short name first, then other names


def code_points(text: str) -> str:
    """'👍🏻' -> '1f44d-1f3fb': the file stem and group id, ASCII and unambiguous."""
    return "-".join(f"{ord(c):x}" for c in text)


def group_of(text: str) -> str:
    """The base emoji that `text` is a variant of, as code points: variants of one picture share it.

    The rule, applied to code points: drop skin tones (U+1F3FB..1F3FF) and variation selectors; split at
    ZWJ and drop the parts that only vary the part before them (gender signs ♀ ♂, hair U+1F9B0..1F9B3,
    facing right ➡), unless nothing else is left (a lone ♂ is its own group); fold man/woman into
    person, boy/girl into child, old man/old woman into older person; finally map the few pictures that
    Unicode encodes twice (👩‍❤️‍💋‍👨 and 💏, 👬 and 🧑‍🤝‍🧑, 🤴 and 🫅, ...) onto one. So 👍 and its five
    skin tones share 1f44d, 🤦‍♂️ and 🤦🏼‍♀️ share 1f926, 👨‍⚕️ and 👩🏿‍⚕️ share 1f9d1-200d-2695.
    Families keep their make-up (two adults and two children differ from one adult and one child).
    """
    core = "".join(c for c in text if c not in SKIN_TONES and c not in VARIATION_SELECTORS)
    parts = core.split(ZWJ)
    kept = [p for p in parts if p not in VARIANT_PARTS] or parts
    base = ZWJ.join(kept).translate(NEUTRAL_PEOPLE)
    return code_points(SAME_AS.get(base, base))


def alias_words(alias: str) -> str:
    """':man_facepalming:' -> 'man facepalming' (the emoji package's shortcode as a caption)."""
    return " ".join(alias.strip(":").replace("_", " ").split())


def character_name(text: str) -> str | None:
    """The Unicode character name of a one-code-point emoji, lower-cased ('thumbs up sign'); else None."""
    core = "".join(c for c in text if c not in VARIATION_SELECTORS)
    if len(core) != 1:
        return None
    name = unicodedata.name(core, None)  # None for characters newer than this Python's Unicode
    return name.lower() if name else None


def emoji_names(text: str, cldr_name: str, aliases: Iterable[str] = ()) -> tuple[str, ...]:
    """The CLDR name first, then the aliases as words and the character name, without repeats.

    Names that differ only in case count as repeats ('grinning face' and GRINNING FACE).
    """
    names: list[str] = []
    for name in (cldr_name, *map(alias_words, aliases), character_name(text)):
        if name and name.casefold() not in {n.casefold() for n in names}:
            names.append(name)
    return tuple(names)


def parse_emoji_test(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(emoji, CLDR short name) of every fully-qualified emoji in an emoji-test.txt, in CLDR order.

    A line reads `1F44D 1F3FB ; fully-qualified # 👍🏻 E1.0 thumbs up: light skin tone`.
    """
    found = []
    for line in lines:
        if line.startswith("#") or ";" not in line:
            continue
        fields, _, comment = line.partition("#")
        cps, status = (f.strip() for f in fields.split(";", 1))
        if status != "fully-qualified":
            continue
        text = "".join(chr(int(cp, 16)) for cp in cps.split())
        _glyph, _version, name = comment.split(maxsplit=2)
        found.append((text, name.strip()))
    return found


def read_emoji_test(path: Path | None) -> tuple[list[tuple[str, str]], Path]:
    """The fully-qualified emoji and names of `path`, or of the first emoji-test.txt installed."""
    if path is None:
        path = next((p for p in EMOJI_TEST_CANDIDATES if p.is_file()), None)
        if path is None:
            raise CharRNNError("Unicode's emoji-test.txt is not installed: apt-get install unicode-data, or give "
                               "--emoji-test FILE (from https://unicode.org/Public/emoji/)")
    elif not Path(path).is_file():
        raise CharRNNError(f"no such file: {str(path)!r}; give --emoji-test an emoji-test.txt")
    path = Path(path)
    found = parse_emoji_test(path.read_text(encoding="utf-8").splitlines())
    if not found:
        raise CharRNNError(f"{str(path)!r} lists no fully-qualified emoji; give --emoji-test Unicode's emoji-test.txt")
    return found, path


def load_aliases() -> dict[str, list[str]]:
    """The emoji package's shortcode aliases of each emoji, e.g. '👍' -> [':thumbsup:', ':+1:']."""
    try:
        import emoji  # an optional extra: only building this dataset needs it
    except ImportError:
        raise CharRNNError("the emoji package is not installed: pip install 'charrnn[emoji]'") from None
    return {e: list(data.get("alias", ())) for e, data in emoji.EMOJI_DATA.items()}


def find_font(font: Path | None) -> Path:
    """`font` if it exists, else the first Noto Color Emoji installed where Linux distributions put it."""
    if font is None:
        font = next((p for p in FONT_CANDIDATES if p.is_file()), None)
        if font is None:
            raise CharRNNError("Noto Color Emoji is not installed: apt-get install fonts-noto-color-emoji, "
                               "or give --font FILE")
    elif not Path(font).is_file():
        raise CharRNNError(f"no such font file: {str(font)!r}; give --font the path of NotoColorEmoji.ttf")
    return Path(font)


class EmojiRenderer:
    """Draw one emoji at the font's native bitmap size; None when the font has no glyph for it.

    A font without an emoji shows it in one of three ways, all caught here: its .notdef glyph (blank in
    Noto Color Emoji), the "unknown flag" glyph (a white flag with a question mark, for flags it lacks),
    or, for a sequence it cannot join, its parts side by side, wider than one glyph.
    """

    MISSING = ("\ue000", "\U0001F1FD\U0001F1FD", "\U0001F3F4\U000E0078\U000E0078\U000E007F")  # PUA, flag XX, tag flag

    def __init__(self, font_path: Path):
        # Pillow's basic layout maps one code point to one glyph; only Raqm (HarfBuzz) forms the ligatures
        # that draw 👍🏻, 🇫🇷 or 👩‍⚕️ as one picture. Without it every sequence would be skipped.
        if not features.check_feature("raqm"):
            raise CharRNNError("this Pillow cannot join emoji sequences (it has no libraqm): pip install "
                               "--force-reinstall pillow, or install your system's libraqm and fribidi")
        try:
            self.font = ImageFont.truetype(str(font_path), BITMAP_SIZE, layout_engine=ImageFont.Layout.RAQM)
        except OSError as e:
            raise CharRNNError(f"cannot draw with {str(font_path)!r} at size {BITMAP_SIZE} ({e}); give --font "
                               "NotoColorEmoji.ttf, a bitmap colour font") from None
        self.missing = [g.tobytes() for g in map(self._draw, self.MISSING) if g is not None]

    def __call__(self, text: str) -> Image.Image | None:
        if self.font.getlength(text) > 1.5 * self.font.getlength(text[0]):
            return None  # drawn as separate glyphs: the font has no ligature for this sequence
        glyph = self._draw(text)
        if glyph is None or glyph.tobytes() in self.missing:
            return None
        return glyph

    def _draw(self, text: str) -> Image.Image | None:
        """RGBA glyph cropped to its ink, or None if nothing was drawn."""
        _, _, right, bottom = self.font.getbbox(text)
        canvas = Image.new("RGBA", (max(right, 1), max(bottom, 1)), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((0, 0), text, font=self.font, embedded_color=True)
        box = canvas.getchannel("A").getbbox()
        return canvas.crop(box) if box else None


def to_square_rgb(glyph: Image.Image, size: int) -> Image.Image:
    """Centre an RGBA glyph on a white square as wide as its longer side, then scale it to size x size.

    Compositing before scaling lets LANCZOS blend edges with the white the model will see, not with
    transparent black (which leaves dark fringes).
    """
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (255, 255, 255, 255))
    square.alpha_composite(glyph.convert("RGBA"), ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def split_random(files: list[str], seed: int, fraction: float = VAL_FRACTION) -> dict[str, str]:
    """'train' or 'val' for each file: a seeded `fraction` of them, drawn independently of any group."""
    order = sorted(files)
    random.Random(seed).shuffle(order)
    val = set(order[:round(fraction * len(order))])
    return {f: "val" if f in val else "train" for f in files}


def split_grouped(groups: dict[str, str], seed: int, fraction: float = VAL_FRACTION) -> dict[str, str]:
    """'train' or 'val' for each file, whole groups at a time: no base emoji is on both sides.

    Groups are taken in a seeded order and each is put in validation if it still fits under `fraction`
    of the files, so the share comes close to `fraction` without a large group overshooting it.
    """
    members: dict[str, list[str]] = {}
    for f, g in groups.items():
        members.setdefault(g, []).append(f)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    target, val = round(fraction * len(groups)), set()
    for g in order:
        if len(val) + len(members[g]) <= target:
            val.update(members[g])
    return {f: "val" if f in val else "train" for f in groups}


def write_dataset(out: Path, emojis: list[Emoji], render: Render, *, size: int, seed: int, license_text: str,
                  on_progress: Progress | None = None) -> dict:
    """Render each emoji with `render` and write images/, captions.tsv, groups.tsv, splits.tsv, the licence.

    `render` is a parameter so that tests can stand in for the font.
    """
    (out / "images").mkdir(parents=True, exist_ok=True)
    written, skipped = [], []
    for i, e in enumerate(emojis):
        glyph = render(e.text)
        if glyph is None:
            skipped.append(e.text)
        else:
            filename = f"images/{code_points(e.text)}.png"
            to_square_rgb(glyph, size).save(out / filename, format="PNG", optimize=True)
            written.append((filename, e))
        if on_progress:
            on_progress(i + 1, len(emojis))
    files = [f for f, _ in written]
    groups = {f: group_of(e.text) for f, e in written}
    random_split, grouped_split = split_random(files, seed), split_grouped(groups, seed)
    write_text_atomic(out / "captions.tsv", "".join(f"{f}\t{name}\n" for f, e in written for name in e.names))
    write_text_atomic(out / "groups.tsv", "".join(f"{f}\t{groups[f]}\n" for f in files))
    write_text_atomic(out / "splits.tsv", "filename\trandom\tgrouped\n"  # the header names the splits
                      + "".join(f"{f}\t{random_split[f]}\t{grouped_split[f]}\n" for f in files))
    write_text_atomic(out / "LICENSE-emoji.txt", license_text)
    return {"out": str(out), "images": len(written), "skipped": len(skipped), "skipped_emoji": skipped,
            "captions": sum(len(e.names) for _, e in written), "groups": len(set(groups.values())),
            "val_random": sum(v == "val" for v in random_split.values()),
            "val_grouped": sum(v == "val" for v in grouped_split.values())}


def make_emoji_dataset(out: Path, *, size: int = 64, font: Path | None = None, emoji_test: Path | None = None,
                       seed: int = 0, on_progress: Progress | None = None) -> dict:
    """Write the emoji caption dataset into the new or empty directory `out`; returns a summary.

    `font` defaults to the installed Noto Color Emoji, `emoji_test` to the installed Unicode
    emoji-test.txt. The summary holds the number of images, captions, groups, skipped emoji (those the
    font cannot draw) and the validation sizes of both splits.
    """
    out = Path(out)
    if size < 8:
        raise CharRNNError(f"--size {size} is too small to show an emoji; give 8 or more (64 is the default)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CharRNNError(f"{str(out)!r} already exists and is not an empty directory; give a new one")
    listed, emoji_test = read_emoji_test(emoji_test)
    aliases = load_aliases()
    font = find_font(font)
    render = EmojiRenderer(font)
    emojis = [Emoji(text, emoji_names(text, name, aliases.get(text, ()))) for text, name in listed]
    return write_dataset(out, emojis, render, size=size, seed=seed, license_text=license_text(font, emoji_test),
                         on_progress=on_progress)


def license_text(font: Path, emoji_test: Path) -> str:
    """Where the images and captions come from and under which licences (OFL 1.1, Unicode v3, BSD)."""
    debian_font = FONT_COPYRIGHT.is_file() and font.resolve() == FONT_CANDIDATES[0].resolve()
    notice = (f"The font's notice from its Debian package (fonts-noto-color-emoji) follows.\n\n"
              f"{FONT_COPYRIGHT.read_text(encoding='utf-8')}" if debian_font else
              "See the licence that came with the font (Noto Color Emoji: SIL Open Font License 1.1).\n")
    header = [line.lstrip("# ") for line in emoji_test.read_text(encoding="utf-8").splitlines()[:10]]
    version = next((line.split(":", 1)[1].strip() for line in header if line.startswith("Version:")), "unknown")
    unicode_copyright = "".join(line + "\n" for line in header if "©" in line)
    return (f"IMAGES: glyphs of the font {font.name}, rendered with Pillow, scaled and put on white.\n"
            f"Noto Color Emoji is licensed under the SIL Open Font License, Version 1.1.\n{notice}\n"
            f"{RULE}CAPTIONS\n\n"
            "- The list of emoji and the first caption of each image (its CLDR short name) are Unicode's\n"
            f"  emoji-test.txt, version {version}. Unicode data files, under the Unicode License v3 below.\n"
            "- Character names (e.g. 'thumbs up sign') are from Python's unicodedata module: Unicode data,\n"
            "  under the same licence.\n"
            "- Aliases (e.g. 'thumbsup') are the shortcodes listed by the `emoji` Python package\n"
            "  (https://github.com/carpedm20/emoji, New BSD License, Copyright (c) Taehoon Kim,\n"
            "  Kevin Wurster), which gathers them from GitHub, Slack and other sources.\n\n"
            f"{unicode_copyright}\n{UNICODE_LICENSE}")


def zip_dataset(root: Path, archive: Path) -> Path:
    """Pack a dataset directory into `archive`, byte-for-byte reproducible (sorted members, fixed dates).

    PNGs are stored (already compressed); the text files are deflated.
    """
    files = sorted(p for p in Path(root).rglob("*") if p.is_file())
    with atomic_write(archive) as f, zipfile.ZipFile(f, "w") as z:  # the zip is closed before it is renamed in
        for p in files:
            info = zipfile.ZipInfo(p.relative_to(root).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED if p.suffix == ".png" else zipfile.ZIP_DEFLATED
            z.writestr(info, p.read_bytes())
    return Path(archive)


UNICODE_LICENSE = """\
UNICODE LICENSE V3

COPYRIGHT AND PERMISSION NOTICE

Copyright © 1991-2024 Unicode, Inc.

NOTICE TO USER: Carefully read the following legal agreement. BY
DOWNLOADING, INSTALLING, COPYING OR OTHERWISE USING DATA FILES, AND/OR
SOFTWARE, YOU UNEQUIVOCALLY ACCEPT, AND AGREE TO BE BOUND BY, ALL OF THE
TERMS AND CONDITIONS OF THIS AGREEMENT. IF YOU DO NOT AGREE, DO NOT
DOWNLOAD, INSTALL, COPY, DISTRIBUTE OR USE THE DATA FILES OR SOFTWARE.

Permission is hereby granted, free of charge, to any person obtaining a
copy of data files and any associated documentation (the "Data Files") or
software and any associated documentation (the "Software") to deal in the
Data Files or Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, and/or sell
copies of the Data Files or Software, and to permit persons to whom the
Data Files or Software are furnished to do so, provided that either (a)
this copyright and permission notice appear with all copies of the Data
Files or Software, or (b) this copyright and permission notice appear in
associated Documentation.

THE DATA FILES AND SOFTWARE ARE PROVIDED "AS IS", WITHOUT WARRANTY OF ANY
KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF
MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT OF
THIRD PARTY RIGHTS.

IN NO EVENT SHALL THE COPYRIGHT HOLDER OR HOLDERS INCLUDED IN THIS NOTICE
BE LIABLE FOR ANY CLAIM, OR ANY SPECIAL INDIRECT OR CONSEQUENTIAL DAMAGES,
OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS,
WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION,
ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THE DATA
FILES OR SOFTWARE.

Except as contained in this notice, the name of a copyright holder shall
not be used in advertising or otherwise to promote the sale, use or other
dealings in these Data Files or Software without prior written
authorization of the copyright holder.
"""
