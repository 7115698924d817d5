"""Looking inside a model: dump (every state and gate of a text), viz (the HTML viewer), cells (probes)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.cli.options import unescape
from charrnn.core.errors import CharRNNError

app = typer.Typer()

VIEWER_CHARS = 3000  # characters `viz` embeds in the page by default

KindsOpt = Annotated[str, typer.Option(
    "--kinds", show_default=False,
    help="Comma-separated kinds whose every unit the page embeds, or all: h, c (lstm), gates i,f,g,o (lstm) or "
         "r,z,n (gru). The probes' top cells and --cell are embedded whatever their kind. "
         "\\[default: all while the page holds at most 16M values, else h and c]")]
CellOpt = Annotated[str | None, typer.Option(
    "--cell", metavar="NAME", help="Open the page coloured by this cell, named as cells prints it: layer0/c/110. "
                                   "\\[default: the top cell of the first probe]")]


def _read_text(text_file: Path | None, text: str | None, encoding: str) -> str:
    from charrnn.core.text import iter_text

    if (text_file is None) == (text is None):
        raise CharRNNError("give either a TEXT_FILE or --text \"...\" to trace")
    return text if text is not None else "".join(iter_text(text_file, encoding=encoding))


def _write_text(path: Path, text: str) -> None:
    from charrnn.core.files import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)


def _check_outputs(inputs: list[Path], **outputs: Path | None) -> None:
    """Refuse, before any work, outputs ({option: path}) that would destroy an input, a run's file or each other."""
    from charrnn.core.files import check_distinct, check_output

    for option, path in outputs.items():
        if path is not None:
            check_output(path, option=option, inputs=inputs)
    check_distinct(outputs)


@app.command("dump")
def dump_command(
    paths: Annotated[list[Path] | None, typer.Argument(
        metavar="[CHECKPOINT] [TEXT_FILE]", show_default=False,
        help="A run directory or .pt file (left out: the shipped tinyshakespeare model), then the text to run "
             "through it (or --text).")] = None,
    text: Annotated[str | None, typer.Option(
        "--text", parser=unescape, help="Trace this text instead of a file (\\n escapes are read).")] = None,
    out: Annotated[Path, typer.Option(
        "--out", "-o", metavar="PATH", help="The .npz file to write (a directory for --format lstmvis).")
    ] = Path("acts.npz"),
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
    """Record every hidden state, cell state and gate of every layer for each character of a text.

    Example: charrnn dump checkpoints/tinyshakespeare heldout.txt --out acts.npz
    """
    from charrnn.core.checkpoint import run_name
    from charrnn.core.device import resolve_device
    from charrnn.core.text import normalize_newlines
    from charrnn.inspect.activations import dump_activations, npz_path
    from charrnn.lm.model import load_model
    from charrnn.lm.task import trained_newline

    checkpoint, text_file = _model_and_text(paths)
    _check_dump_out(out, fmt, [p for p in (checkpoint, text_file) if p is not None])
    source = _read_text(text_file, text, encoding)
    model, tokenizer, ckpt = load_model(checkpoint, resolve_device(device))
    source = normalize_newlines(source, trained_newline(ckpt))  # line ends as the model's corpus was read
    try:
        summary = dump_activations(model, tokenizer, source, out, fmt=fmt, dtype=dtype, name=run_name(checkpoint),
                                   top_k=top_k, map_unknown=map_unknown,
                                   source={"checkpoint": str(checkpoint), "text": str(text_file or "--text")})
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: the temporary file is gone, an earlier one intact
        render.fail(f"interrupted; nothing was written to {npz_path(out) if fmt == 'npz' else out}", 130)
    if json_output:
        render.print_json(summary)
    else:
        render.err.print(f"traced {summary['chars']:,} characters through {summary['cell']} {summary['num_layers']}x"
                         f"{summary['hidden_size']} ({', '.join(summary['kinds'])} per layer) -> {summary['out']}",
                         markup=False)


def _check_dump_out(out: Path, fmt: str, inputs: list[Path]) -> None:
    """Refuse, before any work, a dump's --out that would destroy an input, a run's file or a user's directory."""
    from charrnn.core.files import check_output
    from charrnn.inspect.activations import check_lstmvis_dir, npz_path

    if fmt == "lstmvis":
        check_output(out, option="--out", inputs=inputs, directory=True)
        check_lstmvis_dir(out)
        return
    if out.suffix == ".pt":  # --out RUN/best.pt would write RUN/best.pt.npz: surely not what was meant
        check_output(out, option="--out", inputs=inputs)
    check_output(npz_path(out), option="--out", inputs=inputs)


def _model_and_text(paths: list[Path] | None) -> tuple[Path, Path | None]:
    """[CHECKPOINT] [TEXT_FILE]: the model (the shipped one when left out) and the text file, if any."""
    checkpoint, rest = options.model_and_inputs(paths or [], "lm")
    if len(rest) > 1:
        raise CharRNNError(f"one text file at a time, got {len(rest)}: {', '.join(map(str, rest))}")
    return checkpoint, rest[0] if rest else None


def _page_options(trace, kinds: str, cell: str | None) -> tuple[str, ...] | None:
    """The kinds --kinds names (None: the default), checked against what the trace recorded, and --cell checked."""
    from charrnn.inspect.viewer import parse_cell

    if cell is not None:
        parse_cell(cell, trace)
    recorded = tuple(trace.layers[0])
    wanted = tuple(k.strip() for k in kinds.split(",") if k.strip())
    if wanted == ("all",):
        return recorded
    unknown = [k for k in wanted if k not in recorded]
    if unknown:
        raise CharRNNError(f"--kinds {','.join(unknown)}: this {trace.cell} dump has {', '.join(recorded)} (or all)")
    return wanted or None


def _title(trace, fallback: str) -> str:
    """"charrnn cells: RUN on TEXT" when the trace knows what it traced, else with `fallback`."""
    source = trace.source
    if not source:
        return f"charrnn cells: {fallback}"
    run = Path(source.get("checkpoint", "?"))
    run_name = f"{run.parent.name}/{run.name}" if run.suffix == ".pt" else run.name
    return f"charrnn cells: {run_name} on {Path(source.get('text', '?')).name}"


def _write_page(out: Path, trace, *, chars: int, kinds: tuple[str, ...] | None, cell: str | None, top: int,
                title: str, ranking: dict | None = None) -> dict:
    """Write the viewer and say what it holds (on stderr: stdout may carry --json); return that as a dict."""
    from charrnn.inspect.viewer import html_page, page_data

    data = page_data(trace, max_chars=chars, kinds=kinds, top=top, title=title, ranking=ranking,
                     ranked_chars=trace.length, cell=cell)
    page = html_page(data)
    _write_text(out, page)
    ranked = f"the ranking above, over {data['ranked_chars']:,}" if ranking is not None else "probes ranked on them"
    render.err.print(f"wrote {out} ({len(page) / 1e6:.1f} MB): {len(data['chars']):,} characters, {ranked}; every "
                     f"unit of {', '.join(data['kinds'])}; opens on {data['initial']}", markup=False, soft_wrap=True)
    return {"out": str(out), "bytes": len(page), "chars": len(data["chars"]), "kinds": list(data["kinds"]),
            "cell": data["initial"]}


@app.command("viz")
def viz_command(
    paths: Annotated[list[Path], typer.Argument(
        metavar="ACTIVATIONS | [CHECKPOINT] TEXT_FILE", show_default=False,
        help="A .npz written by charrnn dump, or a text to trace now (with a run directory or .pt file first; "
             "left out: the shipped tinyshakespeare model).")],
    out: Annotated[Path, typer.Option("--out", "-o", metavar="FILE", help="The HTML page to write.")
    ] = Path("cells.html"),
    max_chars: options.MaxCharsOpt = VIEWER_CHARS,
    kinds: KindsOpt = "",
    cell: CellOpt = None,
    top: options.TopOpt = 5,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Write a self-contained HTML page showing the text coloured by any cell's activation.

    The page embeds the first --max-chars characters. --json prints {"out", "bytes", "chars", "kinds", "cell"}.

    Example: charrnn viz acts.npz --cell layer0/h/110 --kinds all --out cells.html
    """
    _check_outputs(paths, **{"--out": out})
    if len(paths) == 1 and paths[0].suffix == ".npz":
        from charrnn.inspect.activations import load_npz

        trace = load_npz(paths[0], max_chars=max_chars)
    else:
        trace = _trace_text(*_model_and_text(paths), max_chars=max_chars, encoding=encoding, map_unknown=map_unknown,
                            device=device)
    wanted = _page_options(trace, kinds, cell)
    page = _write_page(out, trace, chars=max_chars, kinds=wanted, cell=cell, top=top,
                       title=_title(trace, paths[-1].name))
    if json_output:
        render.print_json(page)


def _trace_text(checkpoint: Path, text_file: Path | None, *, max_chars: int, encoding: str = "utf-8",
                map_unknown: bool = False, device: str = "auto"):
    """Every state and gate of the model for the first `max_chars` characters of the text file."""
    from charrnn.core.device import resolve_device
    from charrnn.core.text import normalize_newlines
    from charrnn.inspect.activations import collect_activations
    from charrnn.lm.model import load_model
    from charrnn.lm.task import trained_newline

    if text_file is None:
        raise CharRNNError("give the TEXT_FILE to analyse after the run directory or checkpoint")
    model, tokenizer, ckpt = load_model(checkpoint, resolve_device(device))
    text = normalize_newlines(_read_text(text_file, None, encoding), trained_newline(ckpt))[:max_chars]
    trace = collect_activations(model, tokenizer, text, map_unknown=map_unknown)
    trace.source = {"checkpoint": str(checkpoint), "text": str(text_file)}
    return trace


def _task_of(path: Path) -> str | None:
    """The task of the model `path` names (a run directory, a .pt file or a shipped model's name), else None."""
    from charrnn.core.checkpoint import load_checkpoint
    from charrnn.core.pretrained import is_checkpoint

    if not is_checkpoint(path):
        return None
    return load_checkpoint(options.model_path(path, "lm")).get("task")


@app.command("cells")
def cells_command(
    paths: Annotated[list[Path], typer.Argument(
        metavar="[CHECKPOINT] TEXT_FILE | ACTIVATIONS", show_default=False,
        help="A text to analyse, after a run directory or .pt file (left out: the shipped tinyshakespeare "
             "model); or a .npz from charrnn dump. On a classify run: labelled texts (default: its test part), "
             "to find the units that track each label.")],
    top: options.TopOpt = 5,
    max_chars: options.MaxCharsOpt = 20000,
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Also write the HTML viewer of these results, showing the ranking printed.")] = None,
    html_chars: Annotated[int | None, typer.Option(
        "--html-chars", min=1, show_default=False,
        help="Characters the --html page shows. \\[default: all those analysed]")] = None,
    kinds: KindsOpt = "",
    cell: CellOpt = None,
    plot: Annotated[Path | None, typer.Option(
        "--plot", help="Write the gate-saturation scatter plot (SVG) here.")] = None,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Find interpretable cells by correlation with probes of the text, and measure gate saturation.

    The probes: inside quotes or brackets, bracket depth, position in the line, indentation, comments, word
    starts, line breaks. --json prints {"probes": {...}, "constant": [...], "gate_saturation": {...}}.

    Example: charrnn cells checkpoints/wp dialogue.txt --html cells.html --cell layer0/c/63
    """
    from charrnn.inspect.activations import load_npz
    from charrnn.inspect.plot import saturation_svg
    from charrnn.inspect.probes import rank_cells

    if paths and _task_of(paths[0]) == "classify":  # which unit tracks the label, on labelled texts
        from charrnn.cli.classify import print_label_units

        if len(paths) > 2:
            raise CharRNNError("on a classify run, cells takes the run and at most one labelled data set")
        return print_label_units(options.model_path(paths[0], "lm"), paths[1] if len(paths) == 2 else None,
                                 top=top, device=device, json_output=json_output)
    _check_outputs(paths, **{"--html": html_out, "--plot": plot})
    if len(paths) == 1 and paths[0].suffix == ".npz":
        trace = load_npz(paths[0], max_chars=max_chars)
    else:
        checkpoint, text_file = _model_and_text(paths)
        trace = _trace_text(checkpoint, text_file, max_chars=max_chars, encoding=encoding, map_unknown=map_unknown,
                            device=device)
    if html_out is None and (kinds or cell or html_chars):
        raise CharRNNError("--kinds, --cell and --html-chars shape the --html page: give --html too")
    wanted = _page_options(trace, kinds, cell)  # checked before the ranking, which takes a while
    result = rank_cells(trace, top=top)
    if plot is not None:
        _write_text(plot, saturation_svg(result["gate_saturation"]))
    if html_out is not None:
        _write_page(html_out, trace, chars=html_chars or trace.length, kinds=wanted, cell=cell, top=top,
                    title=_title(trace, paths[-1].name), ranking=result)
    if json_output:
        render.print_json(result)
        return
    ranking, saturation = render.cells_tables(result, trace.length)
    render.out.print(ranking)
    if result["constant"]:
        render.out.print(f"constant in this text (not ranked): {', '.join(result['constant'])}", markup=False)
    render.out.print(saturation)
