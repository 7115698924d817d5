"""Text-line images for a CRNN+CTC reader: lines of any text file drawn in real fonts, with augmentation.

`make_lines(text_file, out_dir, count=...)` writes the layout that `charrnn.ctc.data` reads as a make-lines set:

    train/labels.tsv         filename<TAB>transcript, one line per image (no header), images beside it:
    train/000000.png ...     grayscale PNG, dark ink on light paper, 32-48 px high, as wide as the text
    val/                     validation text in the training fonts
    val-heldout/             validation text in the held-out fonts (absent when there are none)
    make-lines.json          the settings (text file and its sha256, counts, fonts, seed, split) to redo it

Training lines come from the first `1 - val_frac` of the text's characters and validation lines from the
rest, at the boundary `charrnn train` uses for its language model (`data.split_ids`): a language model
trained on the same file with the same `--val-frac` never saw the validation text, so it can be used to
rescore the reader's validation output fairly.

A line is whole words from a random place in its part, whitespace (line ends included) collapsed to one
space, between `min_chars` and `max_chars` characters long. A line is kept only if its font draws every
character: a non-space character that leaves no ink (a zero-width space, a soft hyphen) or that draws the
font's "missing glyph" box cannot be read off the image, so that line is drawn again from another place.
Dropping the character instead would teach the reader transcripts that differ from the ink.

Every line is reproducible on its own: its random numbers come from (seed, part, index), so line 17 of
train/ is the same whatever `count` is. Lines are laid out left to right, one word at a time (each word
gets its own baseline offset), so right-to-left scripts are not supported.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, features

from charrnn.core.errors import CharRNNError
from charrnn.core.files import bundled, write_text_atomic
from charrnn.core.text import iter_text

FONTS_DIR = "corpora/fonts"
# Short name -> file in corpora/fonts/ (sources and licences in corpora/SOURCES.md).
SHIPPED_FONTS = {
    "caladea": "Caladea-Regular.ttf",  # print: a serif text face
    "dkg-handwriting": "dkg.ttf",  # handwriting: print letters from a scanned hand
    "dancing-script": "DancingScript-Regular.otf",  # handwriting: a joined, bouncing script
    "comic-neue": "ComicNeue-Regular.otf",  # handwriting-style: casual marker print
}
DEFAULT = "default"  # Pillow's own scalable font (Aileron Regular, built into Pillow >= 10.1)
DEFAULT_FONTS = ("caladea", "dkg-handwriting", "dancing-script", DEFAULT)
DEFAULT_VAL_FONTS = ("comic-neue",)  # held out: never drawn in train/ or val/
PARTS = ("train", "val", "val-heldout")
LABELS = "labels.tsv"
SETTINGS = "make-lines.json"
FORMAT, VERSION = "charrnn-make-lines", 1
MAX_TRIES = 200  # places tried for one line before giving up (the text or the font does not fit)

Progress = Callable[[int, int], None]  # (lines written, lines in all)


@dataclass(frozen=True)
class MakeLinesSummary:
    """What `make_lines` wrote."""

    out_dir: str
    counts: dict[str, int]  # part ("train", "val", "val-heldout") -> lines written
    fonts: list[str]
    val_fonts: list[str]
    settings: dict = field(repr=False)  # what make-lines.json holds


def font_names() -> list[str]:
    """The names a font argument accepts besides a path: `default` and the shipped fonts."""
    return [DEFAULT, *SHIPPED_FONTS]


# ----- fonts --------------------------------------------------------------------------------------------

REF_SIZE = 100  # px; metrics below are measured at this size and scaled
DEEP = "gjpqy"  # descenders: the median of their bottoms is the bottom of a font's ordinary line
MISSING_PROBE = "\U0010fffd"  # a private-use code point no text font draws: shows the "missing glyph" box


class LineFont:
    """A font ready to draw lines: sized by its x-height (not its nominal size, which says little about the
    ink: at one size dkg-handwriting's x is as high as Caladea's, its l and g reach twice as far), and able to
    say which characters it draws."""

    def __init__(self, name: str):
        self.name = name
        self.path = font_path(name)
        self._sizes: dict[int, ImageFont.FreeTypeFont] = {}
        probe = self.at(REF_SIZE)
        self.x_height = -probe.getbbox("x", anchor="ls")[1]
        self.top = probe.getbbox("H", anchor="ls")[1]  # < 0: above the baseline
        self.bottom = float(np.median([probe.getbbox(c, anchor="ls")[3] for c in DEEP]))
        if self.x_height <= 0 or self.bottom - self.top <= 0:
            raise CharRNNError(f"the font {name!r} draws no x or H; give a font for Latin text")
        self._drawable: dict[str, bool] = {}
        self._missing_box = self._ink(MISSING_PROBE)

    def at(self, size: int) -> ImageFont.FreeTypeFont:
        if size not in self._sizes:  # loading is slow next to drawing a line (Pillow's default decodes base64)
            self._sizes[size] = (ImageFont.load_default(size=size) if self.path is None
                                 else ImageFont.truetype(str(self.path), size))
        return self._sizes[size]

    def size_for(self, x_height: float) -> int:
        """The font size whose x is `x_height` pixels high."""
        return max(6, round(REF_SIZE * x_height / self.x_height))

    def _ink(self, ch: str) -> bytes | None:
        font = self.at(32)
        im = Image.new("L", (96, 96), 0)
        ImageDraw.Draw(im).text((32, 64), ch, font=font, fill=255, anchor="ls")
        return im.tobytes() if im.getbbox() else None

    def draws(self, text: str) -> bool:
        return all(self._draws(c) for c in set(text))

    def _draws(self, ch: str) -> bool:
        if ch not in self._drawable:
            ink = None if ch.isspace() else self._ink(ch)
            self._drawable[ch] = ch == " " or (ink is not None and ink != self._missing_box)
        return self._drawable[ch]


def font_path(name: str) -> Path | None:
    """The file of a font argument (None for Pillow's default), or a CharRNNError naming the choices."""
    if name == DEFAULT:
        if not features.check("freetype2"):
            raise CharRNNError("the 'default' font needs Pillow built with FreeType; install a Pillow wheel "
                               "from PyPI or give a .ttf/.otf font")
        return None
    if name in SHIPPED_FONTS:
        path = bundled(f"{FONTS_DIR}/{SHIPPED_FONTS[name]}")
        if not path.is_file():
            raise CharRNNError(f"the shipped font {name!r} is missing ({path}); reinstall charrnn from its source "
                               "tree, which holds corpora/fonts/")
        return path
    path = Path(name)
    if path.is_file():
        try:
            ImageFont.truetype(str(path), 20)
        except OSError as e:
            raise CharRNNError(f"cannot load the font {name!r} ({e}); give a TrueType or OpenType file") from None
        return path
    raise CharRNNError(f"unknown font {name!r}: give a .ttf/.otf file, {DEFAULT!r} (Pillow's built-in) or a "
                       f"shipped font: {', '.join(SHIPPED_FONTS)}")


def font_record(font: LineFont) -> dict:
    """How make-lines.json names a font: its file and the file's sha256, so that a rerun can check it."""
    if font.path is None:
        return {"name": font.name, "file": "built into Pillow", "sha256": None}
    file = f"{FONTS_DIR}/{SHIPPED_FONTS[font.name]}" if font.name in SHIPPED_FONTS else str(font.path)
    return {"name": font.name, "file": file, "sha256": _sha256(font.path)}


# ----- text ---------------------------------------------------------------------------------------------

def read_parts(text_file: str | os.PathLike, val_frac: float) -> tuple[str, str]:
    """The text's training and validation parts, split where the language model splits it, then with
    CRLF and CR line ends turned into LF."""
    if not 0.0 < val_frac < 1.0:
        raise CharRNNError(f"--val-frac {val_frac} must be between 0 and 1 (0.1 keeps the last 10% for validation)")
    text = "".join(iter_text(text_file, "utf-8"))  # strict UTF-8, BOM dropped: the characters the LM sees
    boundary = int(len(text) * (1.0 - val_frac))  # as data.split_ids, which counts the same characters
    return _lf(text[:boundary]), _lf(text[boundary:])


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def cut_line(text: str, rng: np.random.Generator, min_chars: int, max_chars: int) -> str | None:
    """Whole words from a random place in `text`, whitespace collapsed, aiming at a random length between
    `min_chars` and `max_chars`; None when the words there make no such line (a word longer than
    `max_chars`, or the end of the text)."""
    target = int(rng.integers(min_chars, max_chars + 1))
    start = int(rng.integers(len(text)))
    end = min(len(text), start + 2 * max_chars + 2)  # enough for a cut first word and a whole line after it
    window = text[start:end]
    words = window.split()
    if start > 0 and not text[start - 1].isspace() and not text[start].isspace():
        words = words[1:]  # the first word was cut by the start
    if end < len(text) and not text[end - 1].isspace() and not text[end].isspace():
        words = words[:-1]  # and the last by the window
    line = ""
    for word in words:
        longer = f"{line} {word}" if line else word
        if len(longer) > max_chars:
            break
        line = longer
        if len(line) >= target:
            break
    return line if len(line) >= min_chars else None


# ----- drawing ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Style:
    """One line's augmentation, drawn at random by `draw_style`. Lengths are in pixels."""

    x_height: float  # the height of the letter x
    bold: bool  # FreeType stroke of 1 px around the glyphs: a thicker pen
    weight: float  # gamma on ink coverage: < 1 fattens the anti-aliased edges, > 1 thins them
    shear: float  # horizontal shift per pixel above the baseline: > 0 leans right, like italics
    jitter: float  # each word's baseline moves up or down by at most this
    pad: tuple[float, float, float, float]  # left, top, right, bottom margins beyond the ink
    blur: float  # Gaussian radius; 0 = sharp
    ink: float  # grey level of the ink (0 black)
    paper: float  # grey level of the paper (255 white)
    shade: float  # change in paper brightness from the left edge to the right: uneven light
    noise: float  # standard deviation of per-pixel Gaussian noise


def draw_style(rng: np.random.Generator) -> Style:
    """Ranges chosen to vary the ink and the page while every line stays easy for a person to read."""
    x = float(rng.uniform(10.0, 14.0))  # lines 28-45 px high in print fonts, 40-70 in the handwriting ones
    paper = float(rng.uniform(200.0, 255.0))
    return Style(
        x_height=x,
        bold=bool(rng.random() < 0.15),
        weight=float(np.exp(rng.uniform(np.log(0.75), np.log(1.4)))),
        shear=float(rng.uniform(-0.25, 0.25)),  # at most about 14 degrees
        jitter=float(rng.uniform(0.0, 0.2)) * x,
        pad=(float(rng.uniform(0.2, 2.0)) * x, float(rng.uniform(0.1, 0.6)) * x,
             float(rng.uniform(0.2, 2.0)) * x, float(rng.uniform(0.1, 0.6)) * x),
        blur=float(rng.uniform(0.3, 1.1)) if rng.random() < 0.5 else 0.0,
        ink=float(rng.uniform(0.0, min(90.0, paper - 110.0))),
        paper=paper,
        shade=float(rng.uniform(-20.0, 20.0)),
        noise=float(rng.uniform(0.0, 8.0)) if rng.random() < 0.7 else 0.0,
    )


def render_line(text: str, font: LineFont, style: Style, rng: np.random.Generator) -> Image.Image:
    """A grayscale image of `text` drawn in `font` with `style`; `rng` moves the words and makes the noise."""
    coverage = _ink_coverage(text, font, style, rng)
    return _on_paper(coverage, style, rng)


def _ink_coverage(text: str, font: LineFont, style: Style, rng: np.random.Generator) -> Image.Image:
    """Where the ink is (0-255), each word on its own jittered baseline, sheared, with the margins around."""
    f = font.at(font.size_for(style.x_height))
    stroke = 1 if style.bold else 0
    left, top, right, bottom = f.getbbox(text, anchor="ls", stroke_width=stroke)
    scale = f.size / REF_SIZE
    top = min(top, font.top * scale) - style.jitter  # an ordinary line's height at least, so that a line
    bottom = max(bottom, font.bottom * scale) + style.jitter  # without tall letters is not drawn larger
    pad_left, pad_top, pad_right, pad_bottom = style.pad
    height = math.ceil(pad_top + bottom - top + pad_bottom)
    baseline = pad_top - top
    slack = math.ceil(abs(style.shear) * height) + 2  # room for the shear on either side
    width = math.ceil(right - min(left, 0)) + 2 * slack
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    x0 = slack - min(left, 0)
    start = 0
    for word in text.split(" "):
        dy = float(np.clip(rng.normal(0.0, style.jitter / 2), -style.jitter, style.jitter))
        draw.text((x0 + f.getlength(text[:start]), baseline + dy), word, font=f, fill=255, anchor="ls",
                  stroke_width=stroke, stroke_fill=255)
        start += len(word) + 1
    # Output pixel (x, y) reads input (x - shear * (baseline - y), y): ink above the baseline moves right.
    s = style.shear
    mask = mask.transform(mask.size, Image.Transform.AFFINE, (1, s, -s * baseline, 0, 1, 0),
                          resample=Image.Resampling.BILINEAR)
    ink_left, _, ink_right, _ = mask.getbbox() or (0, 0, width, height)
    crop_left, crop_right = ink_left - round(pad_left), ink_right + round(pad_right)
    return mask.crop((crop_left, 0, crop_right, height))  # outside the canvas crop() fills with 0: no ink


def _on_paper(coverage: Image.Image, style: Style, rng: np.random.Generator) -> Image.Image:
    if style.blur > 0:
        coverage = coverage.filter(ImageFilter.GaussianBlur(style.blur))
    alpha = (np.asarray(coverage, dtype=np.float32) / 255.0) ** style.weight  # (H, W)
    height, width = alpha.shape
    paper = style.paper + style.shade * (np.linspace(-0.5, 0.5, width, dtype=np.float32) if width > 1 else 0.0)
    pixels = paper + (style.ink - paper) * alpha  # (H, W) by broadcasting the (W,) paper row
    if style.noise:
        pixels += style.noise * rng.standard_normal((height, width), dtype=np.float32)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), mode="L")


# ----- the set ------------------------------------------------------------------------------------------

CHUNK = 100  # lines a worker draws per task: a few tenths of a second, so progress moves smoothly


@dataclass(frozen=True)
class Part:
    """What one folder of the set holds: `count` lines cut from `text` and drawn in `fonts` (font arguments)."""

    name: str  # "train", "val" or "val-heldout"
    text: str
    fonts: tuple[str, ...]
    count: int


def make_lines(text_file: str | os.PathLike, out_dir: str | os.PathLike, *, count: int, val_count: int | None = None,
               fonts: list[str] | None = None, val_fonts: list[str] | None = None, seed: int = 0,
               val_frac: float = 0.1, min_chars: int = 10, max_chars: int = 40, overwrite: bool = False,
               workers: int = 1, on_progress: Progress | None = None) -> MakeLinesSummary:
    """Render a text-line training set from `text_file` into `out_dir` (layout in the module docstring).

    `count` training lines; `val_count` lines in val/ and as many in val-heldout/ (default: a tenth of
    `count`, at least 1). `fonts` are the training fonts and `val_fonts` the held-out ones, each a path to a
    .ttf/.otf file, a shipped font's name or "default"; by default the shipped print font, two handwriting
    fonts and Pillow's, with comic-neue held out (`val_fonts=[]`: no val-heldout/). `out_dir` must be new,
    empty or an earlier make-lines output (whose parts are replaced); `overwrite` writes into any directory,
    replacing only the parts. `workers` processes draw the lines; the files are the same whatever their
    number. More than one starts processes with multiprocessing's "spawn", so a script that calls this must
    keep its top level under `if __name__ == "__main__":`.
    """
    val_count = max(count // 10, 1) if val_count is None else val_count
    _check_numbers(count, val_count, seed, min_chars, max_chars, workers)
    train_fonts, heldout_fonts = _choose_fonts(fonts, val_fonts)
    text_file, out = Path(text_file), Path(out_dir)
    _check_out_dir(out, text_file, overwrite)
    train_text, val_text = read_parts(text_file, val_frac)
    parts = [Part("train", train_text, tuple(f.name for f in train_fonts), count),
             Part("val", val_text, tuple(f.name for f in train_fonts), val_count)]
    if heldout_fonts:
        parts.append(Part("val-heldout", val_text, tuple(f.name for f in heldout_fonts), val_count))
    for part in parts:
        if not part.text.split():
            raise CharRNNError(f"the {part.name} part of {str(text_file)!r} has no words; give a longer text")

    settings = {"format": FORMAT, "version": VERSION, "complete": False, "text_file": str(text_file),
                "text_sha256": _sha256(text_file), "val_frac": val_frac, "count": count, "val_count": val_count,
                "fonts": [font_record(f) for f in train_fonts], "val_fonts": [font_record(f) for f in heldout_fonts],
                "seed": seed, "min_chars": min_chars, "max_chars": max_chars,
                "pillow": Image.__version__, "freetype": features.version("freetype2")}
    _clear(out)
    write_text_atomic(out / SETTINGS, json.dumps(settings, indent=2) + "\n")  # marks the folder as ours
    counts = write_parts(LineWriter(out, parts, seed, min_chars, max_chars), workers, on_progress)
    settings.update(complete=True, parts=counts)
    write_text_atomic(out / SETTINGS, json.dumps(settings, indent=2) + "\n")
    return MakeLinesSummary(str(out), counts, [f.name for f in train_fonts], [f.name for f in heldout_fonts],
                            settings)


def write_parts(writer: LineWriter, workers: int, on_progress: Progress | None) -> dict[str, int]:
    """Every part's images and labels.tsv, in new folders; returns the lines per part."""
    parts = list(writer.parts.values())
    for part in parts:
        (writer.out / part.name).mkdir()
    rows: dict[str, list[str]] = {part.name: [] for part in parts}
    total, done = sum(part.count for part in parts), 0
    chunks = [(part.name, i, min(i + CHUNK, part.count)) for part in parts for i in range(0, part.count, CHUNK)]
    for (name, _, _), written in zip(chunks, _write_chunks(writer, chunks, workers)):
        rows[name] += written
        done += len(written)
        if on_progress:
            on_progress(done, total)
    for name, part_rows in rows.items():
        write_text_atomic(writer.out / name / LABELS, "".join(part_rows))
    return {name: len(part_rows) for name, part_rows in rows.items()}


class LineWriter:
    """Draws lines of the parts and saves them as PNGs in out/<part>/. Picklable (fonts are loaded on first
    use), so that each worker process gets its own copy."""

    def __init__(self, out: Path, parts: list[Part], seed: int, min_chars: int, max_chars: int):
        self.out, self.seed, self.min_chars, self.max_chars = out, seed, min_chars, max_chars
        self.parts = {part.name: part for part in parts}
        self._fonts: dict[str, list[LineFont]] = {}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fonts": {}}

    def write(self, name: str, start: int, stop: int) -> list[str]:
        """Lines start..stop-1 of part `name`: their images saved, their labels.tsv rows returned."""
        part = self.parts[name]
        if name not in self._fonts:
            self._fonts[name] = [LineFont(font) for font in part.fonts]
        digits = max(6, len(str(part.count - 1)))
        rows = []
        for i in range(start, stop):
            image, line = make_line(part.text, self._fonts[name], seed=self.seed, part=PARTS.index(name), index=i,
                                    min_chars=self.min_chars, max_chars=self.max_chars, what=f"the {name} text")
            filename = f"{i:0{digits}d}.png"
            image.save(self.out / name / filename, compress_level=1)  # noisy: level 6 is 7% smaller, 1.6x slower
            rows.append(f"{filename}\t{line}\n")
        return rows


def _write_chunks(writer: LineWriter, chunks: list[tuple[str, int, int]], workers: int) -> Iterator[list[str]]:
    """Each chunk's rows, in order: drawn here, or by `workers` processes."""
    if workers == 1 or len(chunks) == 1:
        yield from (writer.write(*chunk) for chunk in chunks)
        return
    # spawn, not fork: the caller may hold threads (torch's, Rich's) that a forked child would inherit broken.
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(writer,))
    try:
        yield from pool.map(_write_chunk, *zip(*chunks))
    finally:
        pool.shutdown(cancel_futures=True)  # on an error or Ctrl-C, do not draw the chunks still queued


_worker: LineWriter | None = None  # a worker process's own writer, set once by _start_worker


def _start_worker(writer: LineWriter) -> None:
    global _worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops the pool
    _worker = writer


def _write_chunk(name: str, start: int, stop: int) -> list[str]:
    return _worker.write(name, start, stop)


def make_line(text: str, fonts: list[LineFont], *, seed: int, part: int, index: int, min_chars: int,
              max_chars: int, what: str = "the text") -> tuple[Image.Image, str]:
    """Line `index` of a part: its font (the fonts take turns), its words and its image, all fixed by
    (seed, part, index)."""
    rng = np.random.default_rng([seed, part, index])
    font = fonts[index % len(fonts)]
    missing: set[str] = set()
    for _ in range(MAX_TRIES):
        line = cut_line(text, rng, min_chars, max_chars)
        if line is None:
            continue
        if font.draws(line):
            return render_line(line, font, draw_style(rng), rng), line
        missing.update(c for c in line if not font.draws(c))
    lacks = f"; it cannot draw {''.join(sorted(missing)[:20])!r}" if missing else ""
    raise CharRNNError(f"found no line of whole words, {min_chars}-{max_chars} characters long, in {what} that the "
                       f"font {font.name!r} can draw, in {MAX_TRIES} tries{lacks}; give a longer text, other "
                       "--min-line-chars/--max-line-chars, or fonts that cover the text's characters")


def _check_numbers(count: int, val_count: int, seed: int, min_chars: int, max_chars: int, workers: int) -> None:
    if count < 1:
        raise CharRNNError(f"--count {count} must be at least 1")
    if val_count < 1:
        raise CharRNNError(f"--val-count {val_count} must be at least 1: the reader validates on val/")
    if workers < 1:
        raise CharRNNError(f"--workers {workers} must be at least 1")
    if seed < 0:
        raise CharRNNError(f"--seed {seed} must be 0 or more")
    if not 1 <= min_chars <= max_chars:
        raise CharRNNError(f"--min-line-chars {min_chars} and --max-line-chars {max_chars} must satisfy "
                           "1 <= min <= max")


def _choose_fonts(fonts: list[str] | None, val_fonts: list[str] | None) -> tuple[list[LineFont], list[LineFont]]:
    """The training and held-out fonts, loaded. A font given twice counts once; a held-out font that is also
    a training font is an error, except that the default held-out font simply drops out."""
    train = [LineFont(name) for name in dict.fromkeys(DEFAULT_FONTS if fonts is None else fonts)]
    if not train:
        raise CharRNNError("give at least one training font")
    used = {f.path.resolve() if f.path else None for f in train}
    names = DEFAULT_VAL_FONTS if val_fonts is None else val_fonts
    heldout = [LineFont(name) for name in dict.fromkeys(names)]
    clash = [f.name for f in heldout if (f.path.resolve() if f.path else None) in used]
    if clash and val_fonts is not None:
        raise CharRNNError(f"held-out font {clash[0]!r} is also a training font; a held-out font must be one "
                           "training never shows")
    return train, [f for f in heldout if f.name not in clash]


def _check_out_dir(out: Path, text_file: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CharRNNError(f"{str(out)!r} is a file; give a directory for the line images")
    if out.is_dir() and any(out.iterdir()) and not overwrite and not is_make_lines_output(out):
        raise CharRNNError(f"{str(out)!r} is not empty and holds no earlier make-lines output ({SETTINGS}); give a "
                           "new directory, or pass --overwrite to replace its train/, val/ and val-heldout/")
    ours = [out / p for p in (*PARTS, SETTINGS)]
    if any(text_file.resolve().is_relative_to(p.resolve()) for p in ours):
        raise CharRNNError(f"the text {str(text_file)!r} lies in a part of {str(out)!r} that make-lines replaces; "
                           "move it or choose another output directory")


def is_make_lines_output(out: Path) -> bool:
    try:
        return json.loads((out / SETTINGS).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _clear(out: Path) -> None:
    """Remove what an earlier run wrote (only that), so no stale image or label survives."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (*PARTS, SETTINGS):
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
