"""The cell viewer in a real headless browser: Chromium driven by Playwright's Python package.

Launched from the system's Chromium (Debian's `chromium`, or $CHARRNN_CHROMIUM) with `executable_path`, so
nothing is downloaded; every test here is skipped where Playwright or Chromium is not installed.
"""

import os
import shutil

import numpy as np
import pytest

from charrnn.inspect.activations import Trace, kinds_of
from charrnn.inspect.probes import in_double_quotes, quote_pairs
from charrnn.inspect.saliency import Saliency
from charrnn.inspect.viewer import render_html

try:
    from playwright import sync_api
except ImportError:
    pytest.skip("Playwright is not installed (pip install playwright; never playwright install)",
                allow_module_level=True)
CHROMIUM = os.environ.get("CHARRNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if not CHROMIUM:
    pytest.skip("no Chromium installed (apt-get install chromium, or set CHARRNN_CHROMIUM)", allow_module_level=True)

# War and Peace's opening, in CRLF as the bundled corpus is, with quotations and a "Prince" now and then.
TEXT = ('"Well, Prince, so Genoa and Lucca are now just family estates of the\r\n'
        'Buonapartes. But I warn you," said Anna Pavlovna to Prince Vasili.\r\n\r\n'
        'It was in July, 1805, and the speaker (a maid of honor) was well known.\r\n'
        '"If you have nothing better to do, Count," she wrote, "come and see me."\r\n\r\n') * 6
CHARS = list(TEXT)
T, H = len(CHARS), 6
QUOTE_CELL, PRINCE_CELL = "layer0/c/2", "layer0/c/4"


def prince_mask() -> np.ndarray:
    mask = np.zeros(T, bool)
    start = TEXT.find("Prince")
    while start >= 0:
        mask[start:start + 6] = True
        start = TEXT.find("Prince", start + 1)
    return mask


def planted_trace() -> Trace:
    """A 1x6 LSTM trace: c/2 tracks quotations on a large offset (-30 outside, -24 inside, as the trained
    quote cell in the issue does); c/4 is on over every "Prince"; everything else is noise."""
    rng = np.random.default_rng(0)
    layers = [{k: rng.uniform(0.2, 0.8, size=(T, H)).astype(np.float32) for k in kinds_of("lstm")}]
    layers[0]["h"] = np.tanh(rng.normal(size=(T, H))).astype(np.float32)
    c = rng.normal(0, 1, size=(T, H))
    c[:, 2] = -30 + 6 * in_double_quotes(CHARS) + rng.normal(0, 0.5, T)
    c[:, 4] = 3.0 * prince_mask() + rng.normal(0, 0.05, T)
    layers[0]["c"] = c.astype(np.float32)
    vocab = sorted(set(CHARS))
    ids = np.array([vocab.index(ch) for ch in CHARS], np.int32)
    top_ids = np.tile(np.array([vocab.index("\r"), vocab.index(" "), vocab.index("e")], np.int32), (T, 1))
    top_probs = np.tile(np.array([0.5, 0.3, 0.1], np.float32), (T, 1))
    next_prob = np.full(T, 0.25, np.float32)
    next_prob[-1] = np.nan
    return Trace(CHARS, ids, "lstm", layers, next_prob, top_ids, top_probs, vocab)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM)
        except Exception as err:  # installed but unable to start here (a missing library, say)
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {err}")
        yield b
        b.close()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("page") / "cells.html"
    path.write_text(render_html(planted_trace(), kinds=("h", "c"), title="planted"), encoding="utf-8")
    return path


class Page:
    """A page opened in the browser, with what went wrong while it ran."""

    def __init__(self, browser, path, width=1400, height=900):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors, self.requests = [], []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("html[data-ready=true]")

    def colours(self) -> np.ndarray:
        """Each character's colour as the page shows it: +alpha for the legend's high hue, -alpha for its low."""
        return np.array(self.page.evaluate("""() => {
            const bar = document.getElementById('bar'), rgb = s => s.match(/\\d+/g).slice(0, 3).join(',');
            return [...document.querySelectorAll('#text [data-i]')].map(s => {
                const c = getComputedStyle(s).backgroundColor, parts = c.match(/[\\d.]+/g).map(Number);
                const alpha = parts.length > 3 ? parts[3] : 1;
                if (alpha === 0) return 0;
                if (rgb(c) === rgb(bar.dataset.high)) return alpha;
                if (rgb(c) === rgb(bar.dataset.low)) return -alpha;
                throw new Error('a colour the legend does not name: ' + c);
            });
        }"""))

    def pick(self, name: str) -> None:
        self.page.fill("#pick", name)
        self.page.press("#pick", "Enter")

    def drag(self, a: int, b: int) -> None:
        """Select characters a..b with the mouse, as a person would."""
        first, last = self.page.locator(f'[data-i="{a}"]'), self.page.locator(f'[data-i="{b}"]')
        first.scroll_into_view_if_needed()
        start, end = first.bounding_box(), last.bounding_box()
        self.page.mouse.move(start["x"] + 1, start["y"] + start["height"] / 2)
        self.page.mouse.down()
        self.page.mouse.move(end["x"] + end["width"] - 1, end["y"] + end["height"] / 2, steps=4)
        self.page.mouse.up()

    def tip_box(self) -> dict:
        return self.page.evaluate("""() => { const r = document.getElementById('tip').getBoundingClientRect();
            return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, shown: r.width > 0,
                    width: document.documentElement.clientWidth, height: document.documentElement.clientHeight}; }""")


def values_of(trace: Trace, name: str) -> np.ndarray:
    _, kind, unit = name.split("/")
    return np.asarray(trace.layers[0][kind][:, int(unit)], dtype=np.float64)


def test_loads_offline_with_one_element_per_character(browser, page_file):
    page = Page(browser, page_file)
    assert page.errors == [] and all(url.startswith("file:") for url in page.requests), page.requests
    spans = page.page.evaluate("""() => [...document.querySelectorAll('#text [data-i]')].map(s =>
        [Number(s.dataset.i), s.getBoundingClientRect().width, s.textContent])""")
    assert [i for i, _, _ in spans] == list(range(T))
    # Every character can be seen and hovered, control characters included: \r is drawn as CR, never raw.
    assert min(width for _, width, _ in spans) > 3
    assert {text for i, _, text in spans if CHARS[i] == "\r"} == {"CR"}
    assert not any("\r" in text for _, _, text in spans)
    assert page.page.title() == "planted"


def test_opens_on_the_quote_cell_and_shows_quotations_in_the_high_colour(browser, page_file):
    page = Page(browser, page_file)
    assert page.page.input_value("#pick") == QUOTE_CELL  # the top in_quotes cell, as `charrnn cells` ranks it
    inside = in_double_quotes(CHARS).astype(bool)
    colours = page.colours()
    # On a scale centred on 0 the cell (-30 to -24) is one hue everywhere; centred on its mean, it is not.
    assert (colours[inside] > 0).mean() > 0.95 and (colours[~inside] < 0).mean() > 0.95
    page.page.select_option("#scale", "raw")
    assert (page.colours() < 0).all()  # what the page used to show: all blue
    page.page.select_option("#scale", "tanh")
    assert page.page.inner_text("#barlo") == "tanh -1"


@pytest.mark.parametrize("scale", ["auto", "centred", "tanh", "raw"])
def test_higher_values_get_the_colour_the_legend_gives_them(browser, page_file, scale):
    page = Page(browser, page_file)
    page.page.select_option("#scale", scale)
    trace = planted_trace()
    for name in ["layer0/h/1", "layer0/c/0", QUOTE_CELL]:
        page.pick(name)
        assert name in page.page.inner_text("#legend") and "red = higher" in page.page.inner_text("#legend")
        values, colours = values_of(trace, name), page.colours()
        order = np.argsort(values, kind="stable")
        # Never less red for a higher value (8-bit codes: values within 1/255 of the range may swap).
        step = (values.max() - values.min()) / 255
        worse = [k for k in range(1, T) if colours[order[k]] < colours[order[k - 1]] - 1e-3
                 and values[order[k]] - values[order[k - 1]] > step]
        assert worse == [], (name, scale)
        if not (scale == "tanh" and name == QUOTE_CELL):  # tanh(-30) = tanh(-24) = -1: one colour, rightly
            assert colours[order[-1]] > colours[order[0]]


def test_every_unit_can_be_picked_and_a_wrong_name_says_why(browser, page_file):
    page = Page(browser, page_file)
    page.pick("layer0/h/5")
    assert page.page.input_value("#pick") == "layer0/h/5" and page.page.inner_text("#pickmsg") == ""
    before = page.colours()
    page.pick("layer1/h/42")  # the old placeholder's example, on a 1-layer model
    message = page.page.inner_text("#pickmsg")
    assert "No cell layer1/h/42" in message and "1 layer(s)" in message and "still coloured by layer0/h/5" in message
    gate = page.page.evaluate("() => ['f', 'i', 'o'].flatMap(k => [0, 1, 2, 3, 4, 5].map(u => `layer0/${k}/${u}`))"
                              ".find(n => !window.charrnn.cells.has(n))")
    page.pick(gate)  # in the dump, not embedded: the page holds h and c, and the probes' top cells
    assert "--kinds all" in page.page.inner_text("#pickmsg")
    page.pick("c/4")  # short for layer0/c/4 on a 1-layer model
    assert page.page.input_value("#pick") == PRINCE_CELL
    assert not np.array_equal(page.colours(), before)


def test_selecting_a_span_ranks_the_planted_cell_first(browser, page_file):
    page = Page(browser, page_file)
    start = TEXT.find("Prince", 200)
    page.drag(start, start + 5)
    assert page.page.inner_text("#selinfo").startswith(f"Characters {start} to {start + 5} (6)")
    first = page.page.locator("#selrank tr").nth(1).locator("button").inner_text()
    assert first == PRINCE_CELL
    # Match search with that cell alone: every "Prince" of the text, and nothing else.
    page.page.evaluate("() => document.querySelectorAll('#selrank input').forEach((b, k) => b.checked = k === 0)")
    page.page.click("#matchbtn")
    matched = page.page.evaluate("() => [...document.querySelectorAll('#text .match')].map(s => Number(s.dataset.i))")
    assert matched == np.flatnonzero(prince_mask()).tolist()
    assert page.errors == []


def test_several_cells_as_rows_under_the_text(browser, page_file):
    page = Page(browser, page_file)
    page.page.locator(".probe", has_text="in_quotes").locator("button.rowsbtn").click()
    rows = page.page.evaluate("() => [...document.querySelectorAll('#rows button')].map(b => b.textContent)")
    assert rows[0] == QUOTE_CELL and len(rows) > 1
    image = page.page.evaluate("() => getComputedStyle(document.querySelector('[data-i=\"5\"]')).backgroundImage")
    assert image.startswith("linear-gradient") and image.count("rgb(") == 2 * len(rows)  # a stripe: two stops
    page.page.click("#clearrows")
    assert page.page.evaluate("() => document.querySelector('[data-i=\"5\"]').style.backgroundImage") == ""


@pytest.mark.parametrize("width,height", [(1000, 700), (390, 844)])
def test_the_tooltip_stays_inside_the_window(browser, page_file, width, height):
    page = Page(browser, page_file, width, height)
    page.page.evaluate("() => { const m = document.getElementById('main'); m.scrollTop = m.scrollHeight; "
                       "window.scrollTo(0, document.body.scrollHeight); }")
    # The last line's last character, and the visible character furthest right.
    targets = page.page.evaluate("""() => {
        const seen = [...document.querySelectorAll('#text [data-i]')].map(s => [s, s.getBoundingClientRect()])
            .filter(([s, r]) => r.width > 0 && r.bottom <= innerHeight && r.top >= 0);
        const lowest = seen.reduce((a, b) => b[1].bottom >= a[1].bottom ? b : a);
        const rightmost = seen.reduce((a, b) => b[1].right > a[1].right ? b : a);
        return [lowest, rightmost].map(([s, r]) => (
            {i: Number(s.dataset.i), x: r.left + r.width / 2, y: r.top + r.height / 2}));
    }""")
    for target in targets:
        page.page.mouse.move(target["x"], target["y"])
        box = page.tip_box()
        assert box["shown"], target
        assert 0 <= box["left"] and box["right"] <= box["width"], box
        assert 0 <= box["top"] and box["bottom"] <= box["height"], box
    text = page.page.inner_text("#tip")
    assert "\r" not in text and f"{QUOTE_CELL} = " in text and "model's top 3: CR 50.0%" in text


def test_a_narrow_window_leaves_the_text_room(browser, page_file):
    page = Page(browser, page_file, 390, 844)
    assert page.page.evaluate("() => document.getElementById('text').getBoundingClientRect().width") >= 300


def test_the_hover_names_the_true_next_character_and_its_probability(browser, page_file):
    page = Page(browser, page_file)
    i = TEXT.index("\r")
    page.page.locator(f'[data-i="{i}"]').hover()
    text = page.page.inner_text("#tip")
    assert f"character {i}: CR" in text and "next: \u21b5, given 25.0% by the model" in text


def test_a_two_layer_gru_page_names_its_layers(browser, tmp_path):
    rng = np.random.default_rng(1)
    chars = list("ab (cd) ef\n" * 30)
    n = len(chars)
    layers = [{k: rng.uniform(size=(n, 5)).astype(np.float32) for k in kinds_of("gru")} for _ in range(2)]
    trace = Trace(chars, np.zeros(n, np.int32), "gru", layers, np.full(n, 0.5, np.float32), np.zeros((n, 2), np.int32),
                  np.full((n, 2), 0.4, np.float32), ["a", "b"])
    path = tmp_path / "gru.html"
    path.write_text(render_html(trace, cell="layer1/z/3"), encoding="utf-8")
    page = Page(browser, path)
    assert page.page.input_value("#pick") == "layer1/z/3" and page.errors == []
    page.pick("h/3")
    assert "Which layer?" in page.page.inner_text("#pickmsg")
    page.pick("layer1/z/4")
    assert page.page.input_value("#pick") == "layer1/z/4" and page.page.inner_text("#pickmsg") == ""
    assert page.page.inner_text("#barhi") == "1 open"  # a gate, drawn from 0 to 1
    assert "update gate" in page.page.text_content("#glossary")


# ----- saliency: hovering a character lights up what its prediction used ----------------------------------

def planted_saliency(window: int = 200) -> Saliency:
    """The prediction of every closing quote used its opening quote most (s = 1.0), then the characters just
    before it; every other prediction only the characters just before it (s = 0.5, 0.2, -0.1, 0.05)."""
    top = 4
    offsets = np.tile(np.arange(top, dtype=np.uint8), (T, 1))
    values = np.tile(np.array([0.5, 0.2, -0.1, 0.05], np.float16), (T, 1))
    values[offsets > np.arange(T)[:, None]] = np.nan  # only characters 0..t exist
    for opening, closing in quote_pairs(CHARS):
        offsets[closing - 1] = [closing - 1 - opening, 0, 1, 2]
        values[closing - 1] = [1.0, 0.3, -0.2, 0.1]
    values[-1] = np.nan
    return Saliency(window, offsets, values)


@pytest.fixture(scope="module")
def saliency_page(tmp_path_factory):
    trace = planted_trace()
    trace.saliency = planted_saliency()
    path = tmp_path_factory.mktemp("saliency") / "cells.html"
    path.write_text(render_html(trace, kinds=("h", "c"), title="planted"), encoding="utf-8")
    return path


def outlined(page: Page) -> dict[int, tuple[str, float]]:
    """The characters outlined as used: {index: (class, alpha of the outline's colour)}."""
    found = page.page.evaluate("""() => [...document.querySelectorAll('#text .used, #text .usedneg')].map(s => {
        const parts = getComputedStyle(s).outlineColor.match(/[\\d.]+/g).map(Number);
        return [Number(s.dataset.i), s.className, parts.length > 3 ? parts[3] : 1]; })""")
    return {i: (cls, alpha) for i, cls, alpha in found}


def test_hovering_a_closing_quote_lights_up_its_opening_quote(browser, saliency_page):
    page = Page(browser, saliency_page)
    assert page.page.is_visible("#usedsection")
    opening, closing = quote_pairs(CHARS)[1]
    page.page.locator(f'[data-i="{closing}"]').hover()
    lit = outlined(page)
    assert lit[opening] == ("used", 1.0)  # the strongest influence, at full strength
    assert lit[closing - 1][1] == pytest.approx(0.3, abs=0.01) and lit[closing - 2][0] == "usedneg"
    assert set(lit) == {opening, closing - 1, closing - 2, closing - 3}
    assert page.page.evaluate(f"() => document.querySelector('[data-i=\"{closing}\"]').classList.contains('predicted')")
    info = page.page.inner_text("#usedinfo")
    assert info.startswith("predicting '\"' after '") and f"'\"' {closing - opening} back +1.0" in info
    # A click holds the view while the pointer moves on; a second click, or Esc, lets go.
    page.page.locator(f'[data-i="{closing}"]').click()
    page.page.locator('[data-i="3"]').hover()
    assert opening in outlined(page) and "held" in page.page.inner_text("#usedinfo")
    page.page.keyboard.press("Escape")
    assert outlined(page) == {}
    page.page.locator('[data-i="3"]').click()
    page.page.locator(f'[data-i="{closing}"]').hover()
    assert set(outlined(page)) == {0, 1, 2}  # still character 3's: its prediction could use characters 0..2
    page.page.locator('[data-i="3"]').click()
    page.page.locator(f'[data-i="{closing}"]').hover()
    assert opening in outlined(page) and page.errors == []


def test_a_page_without_saliency_has_no_saliency_section(browser, page_file):
    page = Page(browser, page_file)
    assert not page.page.is_visible("#usedsection")
    page.page.locator('[data-i="5"]').hover()
    assert outlined(page) == {} and page.errors == []
