"""The attention heatmap of a translation (charrnn/translate/attention_png.py): a PNG whose grid grows with the
tokens, whose darkest cell is where the weight is largest, and several examples stacked in one picture."""

import numpy as np
import pytest
from PIL import Image

from charrnn.translate.attention_png import CELL, GAP, attention_png, attention_pngs


def spread(rows: int, cols: int, peak: tuple[int, int]) -> np.ndarray:
    """Attention rows that sum to 1, small everywhere, 0.7 at `peak`."""
    weights = np.full((rows, cols), 0.3 / (cols - 1))
    weights[peak[0]] = 0.3 / (cols - 1)
    weights[peak] = 0.7
    return weights / weights.sum(axis=1, keepdims=True)


def darkest_blue(path) -> tuple[int, int, int, int]:
    """The box around the darkest blue pixels (labels are black or grey: never blue)."""
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=int)
    blue = rgb[:, :, 2] - rgb[:, :, 0] > 20
    darkness = np.where(blue, 765 - rgb.sum(axis=2), -1)
    ys, xs = np.nonzero(darkness == darkness.max())
    return xs.min(), ys.min(), xs.max(), ys.max()


def test_a_heatmap_is_a_png_its_darkest_cell_where_the_weight_is_largest(tmp_path):
    source, output = list("abcd"), list("xy")  # attention (2 output tokens + </s>, 4 source tokens)
    attention_png(tmp_path / "a.png", source, output, spread(3, 4, (0, 0)))
    attention_png(tmp_path / "b.png", source, output, spread(3, 4, (2, 3)).tolist())  # anything np.asarray takes
    with Image.open(tmp_path / "a.png") as image:
        assert image.format == "PNG"
    x0, y0, x1, y1 = darkest_blue(tmp_path / "a.png")
    assert CELL - 3 <= x1 - x0 <= CELL and CELL - 3 <= y1 - y0 <= CELL  # one whole cell, inside its grid lines
    moved = darkest_blue(tmp_path / "b.png")
    assert (moved[0] - x0, moved[1] - y0) == (3 * CELL, 2 * CELL)  # three columns right, two rows down


def test_the_picture_grows_with_the_tokens(tmp_path):
    attention_png(tmp_path / "small.png", list("aaaa"), list("aa"), spread(3, 4, (1, 1)))
    attention_png(tmp_path / "large.png", list("aaaaaa"), list("aaaa"), spread(5, 6, (1, 1)))
    small, large = Image.open(tmp_path / "small.png"), Image.open(tmp_path / "large.png")
    assert (large.width - small.width, large.height - small.height) == (2 * CELL, 2 * CELL)


def test_spaces_and_long_tokens_are_labelled(tmp_path):
    attention_png(tmp_path / "chars.png", list("a b"), ["K", "S"], spread(3, 3, (0, 0)))
    attention_png(tmp_path / "words.png", ["where", "is", "it"], list("où"), spread(3, 3, (0, 0)))
    chars, words = Image.open(tmp_path / "chars.png"), Image.open(tmp_path / "words.png")
    assert words.height > chars.height  # words too wide for a column are written turned, above the grid


def test_several_examples_stack_top_to_bottom(tmp_path):
    items = [(list("ab"), list("x"), spread(2, 2, (0, 1))), (list("abcdef"), list("xyz"), spread(4, 6, (3, 5)))]
    for k, item in enumerate(items):
        attention_png(tmp_path / f"{k}.png", *item)
    attention_pngs(tmp_path / "both.png", items)
    first, second, both = (Image.open(tmp_path / name) for name in ("0.png", "1.png", "both.png"))
    assert both.size == (max(first.width, second.width), first.height + GAP + second.height)
    np.testing.assert_array_equal(np.asarray(both)[:first.height, :first.width], np.asarray(first))


def test_attention_of_the_wrong_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match="one row per output token"):
        attention_png(tmp_path / "a.png", list("abc"), list("xy"), np.full((2, 3), 1 / 3))
    assert not (tmp_path / "a.png").exists()
