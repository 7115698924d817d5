"""The cell viewer's page, read as data: what it embeds, how it is quantised, and the CLI that writes it.

tests/test_inspect_viewer_browser.py runs the same pages in a real browser."""

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from typer.testing import CliRunner

from charrnn.cli import app
from charrnn.core.errors import CharRNNError
from charrnn.inspect.activations import Trace, gate_saturation, kinds_of, load_npz
from charrnn.inspect.probes import best_probe_cell, in_brackets, in_double_quotes, line_position
from charrnn.inspect.viewer import MAX_EMBEDDED_VALUES, cell_name, default_kinds, parse_cell, quantise, render_html

runner = CliRunner()
WIDE = {"COLUMNS": "250"}


class PageReader(HTMLParser):
    """The page's external references, its data (the JSON of <script id="data">) and its script."""

    def __init__(self, page: str):
        super().__init__()
        self.external, self.data, self.scripts, self._in = [], None, [], None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key, "").startswith(("http", "//")):
                self.external.append(attrs[key])
        self._in = "data" if attrs.get("id") == "data" else tag

    def handle_data(self, data):
        if self._in == "data":
            self.data = json.loads(data)
        elif self._in == "script":
            self.scripts.append(data)
        self._in = None


def decoded(data: dict) -> dict[str, np.ndarray]:
    """Every embedded cell's values as the page decodes them: lo + code / 255 * (hi - lo)."""
    T, out = len(data["chars"]), {}
    for block in data["series"]:
        codes = np.frombuffer(base64.b64decode(block["b64"]), np.uint8).reshape(len(block["units"]), T)
        for j, unit in enumerate(block["units"]):
            lo, hi = block["lo"][j], block["hi"][j]
            out[cell_name(block["layer"], block["kind"], unit)] = lo + codes[j] / 255 * (hi - lo)
    return out


def lstm_trace(chars: list[str], H: int = 4, seed: int = 0) -> Trace:
    """A random 1-layer LSTM trace: c with a large offset, as trained cell states have."""
    T, rng = len(chars), np.random.default_rng(seed)
    layers = [{k: rng.uniform(size=(T, H)).astype(np.float32) for k in kinds_of("lstm")}]
    layers[0]["c"] = rng.normal(-30, 3, size=(T, H)).astype(np.float32)
    K = 3
    return Trace(chars, np.zeros(T, np.int32), "lstm", layers, np.full(T, 0.5, np.float32),
                 np.tile(np.arange(K, dtype=np.int32), (T, 1)), np.full((T, K), 0.25, np.float32), ["a", "\r", "\n"])


def test_html_is_self_contained_and_complete():
    chars = list('He said "hi" (twice)\r\nand left.\r\n') * 3
    T = len(chars)
    pos = line_position(chars)
    h = np.random.default_rng(0).normal(size=(T, 4)).astype(np.float32)
    h[:, 2] = pos / pos.max()  # a perfect line-position cell
    trace = Trace(chars, np.zeros(T, np.int32), "gru",
                  [{"h": h, "r": np.full((T, 4), 0.95, np.float32), "z": np.zeros((T, 4), np.float32),
                    "n": h.copy()}], np.ones(T, np.float32), np.zeros((T, 5), np.int32),
                  np.full((T, 5), 0.2, np.float32), ["a", "b", "c", "d", "e"])
    page = PageReader(render_html(trace))
    assert page.external == [] and "http://" not in "".join(page.scripts).replace("http://www.w3.org", "")
    assert page.data["chars"] == chars
    best = page.data["probes"]["line_position"][0]
    assert (best["layer"], best["kind"], best["unit"]) == (0, "h", 2) and best["correlation"] > 0.99
    found = best_probe_cell(page.data)  # the cell that beats its probe's base rate by the most, if any
    assert page.data["initial"] == (cell_name(found[1]["layer"], found[1]["kind"], found[1]["unit"]) if found
                                    else "layer0/h/0")
    values = decoded(page.data)
    assert set(values) == {cell_name(0, k, u) for k in ("h", "r", "z", "n") for u in range(4)}  # small: every kind
    assert np.allclose(values["layer0/h/2"], h[:, 2], atol=(h[:, 2].max() - h[:, 2].min()) / 510 + 1e-6)
    sat = gate_saturation(trace)
    assert sat["layer0"]["r"]["mean_right"] == 1.0 and sat["layer0"]["z"]["mean_left"] == 1.0


def test_html_shows_the_ranking_it_is_given():
    trace = lstm_trace(list("ab" * 10))
    # No ranking of these characters gives this: the page must show it as it is, not rank again.
    ranking = {"probes": {"in_quotes": [{"layer": 0, "kind": "f", "unit": 3, "correlation": 0.123,
                                         "accuracy": 0.9, "base_rate": 0.6}]},
               "constant": ["in_comment"], "gate_saturation": {}}
    data = PageReader(render_html(trace, max_chars=5, kinds=("h",), ranking=ranking, ranked_chars=20)).data
    assert data["probes"] == ranking["probes"] and data["constant"] == ["in_comment"]
    assert len(data["chars"]) == 5 and data["ranked_chars"] == 20
    assert set(decoded(data)) == {f"layer0/h/{u}" for u in range(4)} | {"layer0/f/3"}
    assert data["initial"] == "layer0/f/3"  # the page opens on the ranking's cell that beats its base rate


PYTHON = """def area(shape, scale=1.0):
    # the area of a shape, scaled
    if shape.kind == "circle":
        return 3.14159 * (shape.r * scale) ** 2
    return sum(side * scale for side in shape.sides)


print(area(make("square", [2, 2])))
""" * 10


def test_the_page_opens_on_a_probe_with_signal_not_on_quotes_without():
    # Python source: the quote probe's top cell (r about 0.2) guesses no better than "never in quotes", while
    # another cell tracks the brackets. The page opens on the brackets cell, and says why.
    chars = list(PYTHON)
    T, rng = len(chars), np.random.default_rng(0)
    h = rng.normal(size=(T, 4)).astype(np.float32)
    h[:, 0] += 0.9 * in_double_quotes(chars)  # a faint quote signal
    h[:, 1] = in_brackets(chars) + 0.1 * rng.normal(size=T)  # a bracket cell
    still = np.full((T, 4), 0.5, np.float32)
    trace = Trace(chars, np.zeros(T, np.int32), "gru", [{"h": h, "r": still, "z": still, "n": still}],
                  np.ones(T, np.float32), np.zeros((T, 1), np.int32), np.ones((T, 1), np.float32), ["a"])
    data = PageReader(render_html(trace)).data
    quotes = data["probes"]["in_quotes"][0]
    assert list(data["probes"])[0] == "in_quotes" and quotes["unit"] == 0 and 0.1 < quotes["correlation"] < 0.3
    assert quotes["accuracy"] - quotes["base_rate"] < 0.02  # no signal: what the page opened on before
    assert data["initial"] == "layer0/h/1" and "in_brackets" in data["initial_note"]

    # No cell of any probe beats its base rate: the first cell, with a note.
    ranking = {"probes": {"in_quotes": [dict(quotes, accuracy=quotes["base_rate"])]}, "constant": [],
               "gate_saturation": {}}
    data = PageReader(render_html(trace, ranking=ranking)).data
    assert data["initial"] == "layer0/h/0" and "No probe's cell beats its base rate" in data["initial_note"]
    assert PageReader(render_html(trace, cell="layer0/h/3")).data["initial_note"] == ""  # --cell: no note


def test_quantised_values_decode_back_within_half_a_step():
    rng = np.random.default_rng(1)
    values = np.stack([rng.normal(-30, 5, 500), np.full(500, 0.7), rng.uniform(0, 1, 500)], axis=1).astype(np.float32)
    values[3, 2] = np.nan  # read as 0, not a broken page
    q = quantise(values)
    codes = np.frombuffer(base64.b64decode(q["b64"]), np.uint8).reshape(3, 500)
    clean = np.nan_to_num(values)
    for u in range(3):
        back = q["lo"][u] + codes[u] / 255 * (q["hi"][u] - q["lo"][u])
        assert np.abs(back - clean[:, u]).max() <= (q["hi"][u] - q["lo"][u]) / 510 + 1e-5
        assert q["mean"][u] == pytest.approx(clean[:, u].mean(dtype=np.float64), rel=1e-6)
        assert q["std"][u] == pytest.approx(clean[:, u].std(dtype=np.float64), rel=1e-6, abs=1e-9)
    assert (codes[1] == 0).all() and q["lo"][1] == q["hi"][1] == pytest.approx(0.7)  # a constant unit


def test_the_text_cannot_end_the_script():
    chars = list('</script><script>alert(1)</script><!-- "x" ')
    page = render_html(lstm_trace(chars))
    assert page.count("</script>") == 2  # the data's and the viewer's own
    assert PageReader(page).data["chars"] == chars


def test_the_page_embeds_every_kind_while_it_is_small():
    trace = lstm_trace(list("abc"), H=4)
    assert default_kinds(trace, 1000) == ("h", "c", "i", "f", "g", "o")
    assert default_kinds(trace, MAX_EMBEDDED_VALUES // 24 + 1) == ("h", "c")
    data = PageReader(render_html(trace, kinds=("c",), cell="layer0/o/1")).data
    assert set(decoded(data)) >= {"layer0/c/0", "layer0/o/1"} and data["initial"] == "layer0/o/1"
    assert data["kinds"] == ["c"] and data["recorded"] == ["h", "c", "i", "f", "g", "o"]
    assert data["sigmoid"] == ["i", "f", "o"]


def test_parse_cell_names_what_exists():
    trace = lstm_trace(list("abc"), H=4)
    assert parse_cell("layer0/g/3", trace) == (0, "g", 3)
    for bad, needle in [("layer1/h/0", "no such cell"), ("layer0/h/4", "no such cell"), ("layer0/x/0", "no such cell"),
                        ("h/42", "layerL/kind/unit")]:
        with pytest.raises(CharRNNError, match=needle) as err:
            parse_cell(bad, trace)
        assert "1 layer(s)" in str(err.value) and "4 units" in str(err.value)


# ----- the CLI --------------------------------------------------------------------------------------

def one_line_error(result, *needles):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def dumped(tmp_path_factory, trained_run):
    run_dir, corpus = trained_run
    out = tmp_path_factory.mktemp("viz") / "acts.npz"
    r = runner.invoke(app, ["dump", str(run_dir), str(corpus), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return run_dir, corpus, out


def test_dump_remembers_what_it_traced_for_the_title(dumped, tmp_path):
    run_dir, corpus, acts = dumped
    assert load_npz(acts).source == {"checkpoint": str(run_dir), "text": str(corpus)}
    r = runner.invoke(app, ["viz", str(acts), "--out", str(tmp_path / "p.html"), "--max-chars", "400"])
    assert r.exit_code == 0, r.output
    data = PageReader((tmp_path / "p.html").read_text(encoding="utf-8")).data
    assert data["title"] == f"charrnn cells: {run_dir.name} on {corpus.name}"
    assert len(data["chars"]) == 400 and "400 characters" in r.stderr


def test_viz_opens_on_the_cell_asked_for(dumped, tmp_path):
    _, _, acts = dumped
    out = tmp_path / "p.html"
    r = runner.invoke(app, ["viz", str(acts), "--out", str(out), "--cell", "layer0/z/7", "--kinds", "h"])
    assert r.exit_code == 0, r.output
    data = PageReader(out.read_text(encoding="utf-8")).data
    assert data["initial"] == "layer0/z/7" and "layer0/z/7" in decoded(data) and data["kinds"] == ["h"]
    assert "opens on layer0/z/7" in r.stderr
    r = runner.invoke(app, ["viz", str(acts), "--out", str(out), "--kinds", "all"])
    assert PageReader(out.read_text(encoding="utf-8")).data["kinds"] == ["h", "r", "z", "n"]


def test_viz_refuses_a_cell_or_kind_that_does_not_exist(dumped, tmp_path):
    _, _, acts = dumped
    out = tmp_path / "p.html"
    one_line_error(runner.invoke(app, ["viz", str(acts), "--out", str(out), "--cell", "layer1/h/0"]),
                   "--cell layer1/h/0", "1 layer(s)")
    one_line_error(runner.invoke(app, ["viz", str(acts), "--out", str(out), "--cell", "h/0"]), "layerL/kind/unit")
    one_line_error(runner.invoke(app, ["viz", str(acts), "--out", str(out), "--kinds", "h,c"]), "--kinds c")
    assert not out.exists()


def test_cells_html_shows_every_character_analysed_and_the_ranking_printed(trained_run, tmp_path):
    run_dir, corpus = trained_run
    longer = tmp_path / "longer.txt"
    text = corpus.read_text(encoding="utf-8") * 2  # past the 3,000 characters the page used to keep
    longer.write_text(text, encoding="utf-8")
    out = tmp_path / "ranked.html"
    r = runner.invoke(app, ["cells", str(run_dir), str(longer), "--json", "--html", str(out)])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout)
    data = PageReader(out.read_text(encoding="utf-8")).data
    assert len(data["chars"]) == len(text) and data["ranked_chars"] == len(text)
    assert data["probes"] == result["probes"] and data["constant"] == result["constant"]
    assert data["title"] == f"charrnn cells: {run_dir.name} on longer.txt"
    assert f"{len(text):,} characters, the ranking above, over {len(text):,}" in " ".join(r.stderr.split())
    r = runner.invoke(app, ["cells", str(run_dir), str(longer), "--json", "--html", str(out), "--html-chars", "500"])
    data = PageReader(out.read_text(encoding="utf-8")).data
    assert len(data["chars"]) == 500 and data["ranked_chars"] == len(text)
    assert data["probes"] == json.loads(r.stdout)["probes"]


def test_cells_html_options_need_html_and_a_real_cell(trained_run):
    run_dir, corpus = trained_run
    one_line_error(runner.invoke(app, ["cells", str(run_dir), str(corpus), "--cell", "layer0/h/0"]), "--html")
    one_line_error(runner.invoke(app, ["cells", str(run_dir), str(corpus), "--html", "x.html",
                                       "--cell", "layer0/h/999"]), "--cell layer0/h/999")


def test_help_shows_the_viewer_options_with_an_example():
    for command, flags in [("viz", ["--cell", "--kinds", "--max-chars"]),
                           ("cells", ["--cell", "--kinds", "--html", "--html-chars"])]:
        r = runner.invoke(app, [command, "--help"], env=WIDE)
        assert r.exit_code == 0
        for flag in flags:
            assert re.search(rf"(?<![\w-]){flag}(?![\w-])", r.stdout), f"{command} --help lacks {flag}"
        assert "Example: charrnn " + command in " ".join(r.stdout.split())
