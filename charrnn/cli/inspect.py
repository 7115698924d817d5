"""Looking inside a model: dump (every state and gate of a text), viz (the HTML viewer), cells (probes),
gradients (how far back predictions reach)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from charrnn.cli import options, render
from charrnn.core.errors import CharRNNError

app = typer.Typer()

VIEWER_CHARS = 3000  # characters `viz` embeds in the page by default
SALIENCY_WINDOW, SALIENCY_TOP = 100, 10  # as saliency.WINDOW and saliency.TOP (this module loads no torch)

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
    text: options.TextOpt = None,
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
    saliency: options.SaliencyOpt = False,
    saliency_window: options.SaliencyWindowOpt = SALIENCY_WINDOW,
    saliency_top: options.SaliencyTopOpt = SALIENCY_TOP,
    json_output: options.JsonOpt = False,
) -> None:
    """Record every hidden state, cell state and gate of every layer for each character of a text.

    --saliency also stores which earlier characters each prediction used (.npz only), which viz lights up on
    hover and cells sums up for closing quotes and brackets.

    Example: charrnn dump checkpoints/tinyshakespeare heldout.txt --out acts.npz
    """
    from charrnn.core.checkpoint import run_name
    from charrnn.core.device import resolve_device
    from charrnn.core.text import normalize_newlines
    from charrnn.inspect.activations import dump_activations, npz_path
    from charrnn.lm.model import load_model
    from charrnn.lm.task import trained_newline

    checkpoint, text_file = _model_and_text(paths)
    settings = _saliency_settings(saliency, saliency_window, saliency_top)
    if settings is not None and fmt == "lstmvis":
        raise CharRNNError("--saliency is kept in the .npz only (an LSTMVis project has no place for it): "
                           "leave out --format lstmvis or --saliency")
    _check_dump_out(out, fmt, [p for p in (checkpoint, text_file) if p is not None])
    source = _read_text(text_file, text, encoding)
    model, tokenizer, ckpt = load_model(checkpoint, resolve_device(device))
    source = normalize_newlines(source, trained_newline(ckpt))  # line ends as the model's corpus was read
    try:
        with _saliency_bar(settings) as on_progress:
            summary = dump_activations(model, tokenizer, source, out, fmt=fmt, dtype=dtype,
                                       name=run_name(checkpoint), top_k=top_k, map_unknown=map_unknown,
                                       source={"checkpoint": str(checkpoint), "text": str(text_file or "--text")},
                                       saliency=settings, on_progress=on_progress)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or SIGHUP: the temporary file is gone, an earlier one intact
        render.fail(f"interrupted; nothing was written to {npz_path(out) if fmt == 'npz' else out}", 130)
    if json_output:
        render.print_json(summary)
    else:
        kept = summary["saliency"]
        render.err.print(f"traced {summary['chars']:,} characters through {summary['cell']} {summary['num_layers']}x"
                         f"{summary['hidden_size']} ({', '.join(summary['kinds'])} per layer"
                         + (f"; saliency: top {kept['top']} of {kept['window']} back" if kept else "")
                         + f") -> {summary['out']}", markup=False)


def _saliency_bar(settings):
    """A progress bar for the saliency pass, which takes most of the time (none without one)."""
    import contextlib

    return render.progress_bar("saliency") if settings is not None else contextlib.nullcontext(None)


def _saliency_settings(saliency: bool, window: int, top: int):
    """The saliency a command was asked for (None without --saliency), checked before any work."""
    from charrnn.inspect.saliency import SaliencySettings

    if not saliency:
        if (window, top) != (SALIENCY_WINDOW, SALIENCY_TOP):
            raise CharRNNError("--saliency-window and --saliency-top shape --saliency: give --saliency too")
        return None
    import torch

    torch.set_flush_denormal(True)  # in every thread, before torch starts its workers: see gradients_command
    return SaliencySettings(window, top)


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
    saliency: options.SaliencyOpt = False,
    saliency_window: options.SaliencyWindowOpt = SALIENCY_WINDOW,
    saliency_top: options.SaliencyTopOpt = SALIENCY_TOP,
    json_output: options.JsonOpt = False,
) -> None:
    """Write a self-contained HTML page showing the text coloured by any cell's activation.

    The page embeds the first --max-chars characters. --json prints {"out", "bytes", "chars", "kinds", "cell"}.
    With saliency (a dump made with --saliency, or --saliency here), hovering a character lights up the earlier
    characters its prediction used; a click holds them, Esc lets go.

    Example: charrnn viz acts.npz --cell layer0/h/110 --kinds all --out cells.html
    """
    _check_outputs(paths, **{"--out": out})
    settings = _saliency_settings(saliency, saliency_window, saliency_top)
    if len(paths) == 1 and paths[0].suffix == ".npz":
        from charrnn.inspect.activations import load_npz

        _refuse_saliency_of_a_dump(settings)
        trace = load_npz(paths[0], max_chars=max_chars)
    else:
        trace = _trace_text(*_model_and_text(paths), max_chars=max_chars, encoding=encoding, map_unknown=map_unknown,
                            device=device, saliency=settings)
    wanted = _page_options(trace, kinds, cell)
    page = _write_page(out, trace, chars=max_chars, kinds=wanted, cell=cell, top=top,
                       title=_title(trace, paths[-1].name))
    if json_output:
        render.print_json(page)


def _refuse_saliency_of_a_dump(settings) -> None:
    if settings is not None:
        raise CharRNNError("--saliency traces a text; a .npz holds what its dump recorded: make it with "
                           "charrnn dump --saliency")


def _trace_text(checkpoint: Path, text_file: Path | None, *, max_chars: int, encoding: str = "utf-8",
                map_unknown: bool = False, device: str = "auto", saliency=None):
    """Every state and gate of the model for the first `max_chars` characters of the text file (and the
    saliency of its predictions, when `saliency` says how much to keep)."""
    from charrnn.core.device import resolve_device
    from charrnn.core.text import normalize_newlines
    from charrnn.inspect.activations import collect_activations
    from charrnn.lm.model import load_model
    from charrnn.lm.task import trained_newline

    if text_file is None:
        raise CharRNNError("give the TEXT_FILE to analyse after the run directory or checkpoint")
    model, tokenizer, ckpt = load_model(checkpoint, resolve_device(device))
    text = normalize_newlines(_read_text(text_file, None, encoding), trained_newline(ckpt))[:max_chars]
    with _saliency_bar(saliency) as on_progress:
        trace = collect_activations(model, tokenizer, text, map_unknown=map_unknown, saliency=saliency,
                                    on_progress=on_progress)
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
    plot: options.plot_option("Write the gate-saturation scatter plot (SVG) here.") = None,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    saliency: options.SaliencyOpt = False,
    saliency_window: options.SaliencyWindowOpt = SALIENCY_WINDOW,
    saliency_top: options.SaliencyTopOpt = SALIENCY_TOP,
    json_output: options.JsonOpt = False,
) -> None:
    """Find interpretable cells by correlation with probes of the text, and measure gate saturation.

    The probes: inside quotes or brackets, bracket depth, position in the line, indentation, comments, word
    starts, line breaks. --json prints {"probes": {...}, "constant": [...], "gate_saturation": {...}}, and
    "influence" with saliency (a dump made with --saliency, or --saliency here): for closing quotes and
    brackets, how often the opening one is among the top 5 influences of the closing one's prediction.

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
    settings = _saliency_settings(saliency, saliency_window, saliency_top)
    if len(paths) == 1 and paths[0].suffix == ".npz":
        _refuse_saliency_of_a_dump(settings)
        trace = load_npz(paths[0], max_chars=max_chars)
    else:
        checkpoint, text_file = _model_and_text(paths)
        trace = _trace_text(checkpoint, text_file, max_chars=max_chars, encoding=encoding, map_unknown=map_unknown,
                            device=device, saliency=settings)
    if html_out is None and (kinds or cell or html_chars):
        raise CharRNNError("--kinds, --cell and --html-chars shape the --html page: give --html too")
    wanted = _page_options(trace, kinds, cell)  # checked before the ranking, which takes a while
    result = rank_cells(trace, top=top)
    if trace.saliency is not None:
        from charrnn.inspect.probes import influence_summary

        result["influence"] = influence_summary(trace)
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
    if "influence" in result:
        render.out.print(render.influence_table(result["influence"]))


@app.command("gradients")
def gradients_command(
    paths: Annotated[list[Path], typer.Argument(
        metavar="RUN [RUN...] TEXT_FILE", show_default=False,
        help="Language models (run directories, .pt files or shipped), then the text to measure on (or --text).")],
    text: options.TextOpt = None,
    max_distance: Annotated[int, typer.Option(
        "--max-distance", min=1, metavar="K", help="Distances k = 0..K characters back that the curve covers.")
    ] = 200,
    positions: Annotated[int, typer.Option(
        "--positions", min=1, help="Positions, spread evenly over the text, that the curve averages over (all of "
                                   "them where the text has fewer).")] = 256,
    threshold: Annotated[float, typer.Option(
        "--threshold", help="The memory length is the first k at which the mean norm falls below this fraction "
                            "of its value at k = 0 (between 0 and 1).")] = 1e-3,
    untrained: Annotated[bool, typer.Option(
        "--untrained", help="Also measure each run's architecture at initialisation, labelled \"NAME (untrained)\": "
                            "the run's own starting weights, rebuilt from the seed its checkpoint records (one that "
                            "records none: weights seeded with 1337, labelled so).")] = False,
    batch_size: options.batch_size_option(
        "Positions per forward and backward pass. \\[default: 64, fewer where that would hold over 1 GiB]") = None,
    plot: options.plot_option("Write the curves here (SVG): one per run on a log scale, untrained ones dashed.") = None,
    encoding: options.EncodingOpt = "utf-8",
    map_unknown: options.MapUnknownOpt = False,
    device: options.DeviceOpt = "auto",
    json_output: options.JsonOpt = False,
) -> None:
    """Measure how far back each run's predictions reach: gradients through time.

    For positions t spread evenly over the text (those with K characters before them and a next one after),
    the L2 norm of the gradient of log p(true next character | text up to t) with respect to the input vector
    of character t - k (its embedding, or its one-hot vector in a model without one), for k = 0..K, averaged
    over the positions. The hidden state is carried in from the text before each window; eval mode, float32.
    The memory length is the first k at which that mean falls below --threshold x its value at k = 0 (1/1000
    by default). --json prints {"max_distance", "threshold", "positions", "text_chars", "runs": [{"name",
    "cell", "num_layers", "hidden_size", "untrained", "positions", "curve", "relative", "memory_length"}]}.

    Example: charrnn gradients checkpoints/wp dialogue.txt --untrained --plot memory.svg
    """
    import torch

    from charrnn.core.device import resolve_device
    from charrnn.inspect.gradients import check_memory_settings, load_memory_runs, memory_report
    from charrnn.inspect.plot import memory_svg

    # Denormals flushed to zero in every thread: OpenMP's workers take this thread's setting when they start, which
    # is after this line (a 2x512 GRU took twice as long on 2 threads without; see gradients.flush_denormals).
    torch.set_flush_denormal(True)
    runs, text_file = _runs_and_text(paths, text)
    _check_outputs([*runs, *([text_file] if text_file else [])], **{"--plot": plot})
    check_memory_settings(max_distance, positions, threshold, batch_size)
    source = _read_text(text_file, text, encoding)
    measured = load_memory_runs(runs, source, untrained=untrained, map_unknown=map_unknown,
                                device=resolve_device(device))
    with render.progress_bar("gradients through time") as on_progress:
        report = memory_report(measured, max_distance=max_distance, positions=positions, threshold=threshold,
                               batch_size=batch_size, text_chars=len(source), on_progress=on_progress)
    if plot is not None:
        counts = sorted({r["positions"] for r in report["runs"]})
        _write_text(plot, memory_svg(report, f"gradients through time on {text_file.name if text_file else '--text'}"
                                             f" ({'/'.join(map(str, counts))} positions)"))
    if json_output:
        render.print_json(report)
    else:
        render.out.print(render.memory_table(report))


def _runs_and_text(paths: list[Path], text: str | None) -> tuple[list[Path], Path | None]:
    """RUN [RUN...] [TEXT_FILE]: the models (every leading path that names one) and the text file, if any."""
    from charrnn.core.pretrained import is_checkpoint

    count = next((i for i, p in enumerate(paths) if not is_checkpoint(p)), len(paths))
    runs, rest = [options.model_path(p, "lm") for p in paths[:count]], paths[count:]
    if not runs:
        raise CharRNNError("give at least one RUN (a run directory, a .pt file or shipped) before the text")
    if text is not None and rest:
        raise CharRNNError("give either a TEXT_FILE or --text \"...\", not both")
    if text is None and len(rest) != 1:
        raise CharRNNError("give the TEXT_FILE after the runs (or --text \"...\")" if not rest else
                           f"one text file at a time, got {len(rest)}: {', '.join(map(str, rest))}")
    return runs, rest[0] if rest else None
