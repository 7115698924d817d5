"""Looking inside a model: dump (every state and gate of a text), viz (the HTML viewer), cells (probes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from charrnn.cli import options, render
from charrnn.cli.options import unescape
from charrnn.common import CharRNNError

app = typer.Typer()

VIEWER_CHARS = 3000  # characters `cells --html` embeds in the page, as `viz` does by default


def _read_text(text_file: Path | None, text: str | None, encoding: str) -> str:
    from charrnn.data import iter_text

    if (text_file is None) == (text is None):
        raise CharRNNError("give either a TEXT_FILE or --text \"...\" to trace")
    return text if text is not None else "".join(iter_text(text_file, encoding=encoding))


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@app.command("dump")
def dump_command(
    checkpoint: options.CheckpointArg,
    text_file: Annotated[Optional[Path], typer.Argument(
        metavar="TEXT_FILE", help="Text to run through the model.", show_default=False)] = None,
    text: Annotated[Optional[str], typer.Option(
        "--text", parser=unescape, help="Trace this text instead of a file (\\n escapes are read).")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Output .npz file, or directory for --format lstmvis.")] = Path("acts.npz"),
    fmt: Annotated[Literal["npz", "lstmvis"], typer.Option(
        "--format", help="npz (NumPy) or lstmvis (a project directory LSTMVis opens; needs h5py).")] = "npz",
    top_k: Annotated[int, typer.Option(
        "--top-k", min=1, help="Top next-character predictions stored per character.")] = 5,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    dtype: Annotated[Literal["float32", "float16"], typer.Option(
        "--dtype", help="Precision of the stored states and gates: float16 halves the file.")] = "float32",
    json_output: options.JsonOpt = False,
) -> None:
    """Record every hidden state, cell state and gate of every layer for each character of a text."""
    from charrnn.activations import dump_activations
    from charrnn.checkpoint import load_model
    from charrnn.device import resolve_device

    source = _read_text(text_file, text, encoding)
    model, tokenizer, _ = load_model(checkpoint, resolve_device(device))
    summary = dump_activations(model, tokenizer, source, out, fmt=fmt, dtype=dtype, name=Path(str(checkpoint)).stem,
                               top_k=top_k, map_unknown=map_unknown)
    if json_output:
        render.print_json(summary)
    else:
        render.err.print(f"traced {summary['chars']:,} characters through {summary['cell']} {summary['num_layers']}x"
                         f"{summary['hidden_size']} ({', '.join(summary['kinds'])} per layer) -> {summary['out']}",
                         markup=False)


@app.command("viz")
def viz_command(
    activations: Annotated[Path, typer.Argument(
        metavar="ACTIVATIONS", help="A .npz written by charrnn dump.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")] = Path("cells.html"),
    max_chars: Annotated[int, typer.Option(
        "--max-chars", min=1, help="Show the first N characters (the page embeds their activations).")
    ] = VIEWER_CHARS,
    kinds: Annotated[str, typer.Option(
        "--kinds", show_default=False,
        help="Comma-separated kinds offered in the picker: h, c (lstm), gates i,f,g,o (lstm) or r,z,n (gru). "
             "\\[default: h and c]")] = "",
    top: options.TopOpt = 5,
) -> None:
    """Write a self-contained HTML page showing the text coloured by any cell's activation."""
    from charrnn.activations import load_npz
    from charrnn.viz import render_html

    trace = load_npz(activations, max_chars=max_chars)
    recorded = trace.layers[0]
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip()) or tuple(k for k in ("h", "c") if k in recorded)
    unknown = [k for k in wanted if k not in recorded]
    if unknown:
        raise CharRNNError(f"--kinds {','.join(unknown)}: this {trace.cell} dump has {', '.join(recorded)}")
    page = render_html(trace, max_chars=max_chars, kinds=wanted, top=top,
                       title=f"charrnn cells: {activations.name}")
    _write_text(out, page)
    render.err.print(f"wrote {out} ({len(page) / 1e6:.1f} MB, {min(trace.length, max_chars):,} characters); "
                     "open it in a browser", markup=False)


@app.command("cells")
def cells_command(
    source: Annotated[Path, typer.Argument(
        metavar="SOURCE", show_default=False,
        help="Run directory or checkpoint (with TEXT_FILE), or a .npz from charrnn dump.")],
    text_file: Annotated[Optional[Path], typer.Argument(
        metavar="TEXT_FILE", help="Text to analyse (not needed for a .npz).", show_default=False)] = None,
    top: options.TopOpt = 5,
    max_chars: Annotated[int, typer.Option(
        "--max-chars", min=2, help="Analyse the first N characters of the text.")] = 20000,
    html_out: Annotated[Optional[Path], typer.Option(
        "--html", help="Also write the HTML viewer of these results (the first "
                       f"{VIEWER_CHARS:,} characters).")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", help="Write the gate-saturation scatter plot (SVG) here.")] = None,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Find interpretable cells by correlation with probes of the text, and measure gate saturation.

    The probes: inside quotes or brackets, bracket depth, position in the line, indentation, comments, word
    starts, line breaks. --json prints {"probes": {...}, "constant": [...], "gate_saturation": {...}}.
    """
    from charrnn.activations import collect_activations, load_npz
    from charrnn.checkpoint import load_model
    from charrnn.device import resolve_device
    from charrnn.plot import saturation_svg
    from charrnn.probes import rank_cells
    from charrnn.viz import render_html

    if source.suffix == ".npz":
        trace = load_npz(source, max_chars=max_chars)
    else:
        if text_file is None:
            raise CharRNNError("give the TEXT_FILE to analyse after the run directory or checkpoint")
        model, tokenizer, _ = load_model(source, resolve_device(device))
        text = _read_text(text_file, None, encoding)[:max_chars]
        trace = collect_activations(model, tokenizer, text, map_unknown=map_unknown)
    result = rank_cells(trace, top=top)
    if plot is not None:
        _write_text(plot, saturation_svg(result["gate_saturation"]))
    if html_out is not None:
        _write_text(html_out, render_html(trace, max_chars=VIEWER_CHARS, top=top, ranking=result))
    if json_output:
        render.print_json(result)
        return
    ranking, saturation = render.cells_tables(result, trace.length)
    render.out.print(ranking)
    if result["constant"]:
        render.out.print(f"constant in this text (not ranked): {', '.join(result['constant'])}", markup=False)
    render.out.print(saturation)
