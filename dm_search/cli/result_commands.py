"""`dm-search report | export | dashboard`: a study's results as a report, a file and a
live dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from dm_search.cli.app import app, console, err_console, fail, load_study, open_store, writable
from dm_search.cli.summary import _ramp

__all__ = ["dashboard", "export", "report"]


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="Study name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    static: Annotated[Path | None, typer.Option(
        "--static", help="Also write every figure into this folder as SVG and PNG "
        "(for a paper).")] = None,
) -> None:
    """Write one self-contained HTML report of a study (works offline).

    Set-up and provenance (data, nominal and measured noise, budget, wall time, hardware,
    versions, git commit); the result: the best EDF, the final stage with memorisation, and
    learning curves of the best EDF against CE over the whole budget; the search: history,
    families, the best EDF of each family against CE, the accuracy planes, importances and
    parallel coordinates per family; and tables of every family and every trial.
    """
    from dm_search.common.paths import folder_problem
    from dm_search.results.report import write_report

    if output.suffix.lower() not in (".html", ".htm"):
        # The report is HTML whatever the name says: a report.pdf would be HTML named .pdf.
        raise fail(f"--output {output}: the report is one HTML file; give a .html name "
                    f"(e.g. {output.with_suffix('.html')})")
    writable(output, "--output")
    if static is not None:
        # Made now, not after the report: a folder that cannot be made is the mistake to name.
        problem = folder_problem(static)
        if problem is None:
            try:
                static.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                problem = err
        if problem is not None:
            why = getattr(problem, "strerror", None) or str(problem)
            raise fail(f"--static {static}: cannot make this folder ({why}); give a folder "
                        "this user can write")
    loaded = load_study(study, storage)
    try:
        path = write_report(loaded, output, static=static)
    except OSError as err:
        raise fail(f"cannot write the report: {err}") from None
    console.print(f"wrote {path} (open it in any browser; it needs no network)")
    if static is not None:
        console.print(f"wrote every figure to {static}/ as <name>.svg and <name>.png")


@app.command()
def export(
    study: Annotated[str, typer.Argument(help="Study name.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write.")] = Path(
        "best_edf.yaml"),
    fmt: Annotated[
        str | None, typer.Option("--format", help="yaml or json (default: from the suffix).")
    ] = None,
    trial: Annotated[
        int | None, typer.Option(help="Export this trial instead of the best one.")
    ] = None,
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
) -> None:
    """Export the best EDF (or trial N's) as a file that `dm_search.load_loss` reads.

    Only trials that ran their full budget are eligible. Example:
    dm-search export quickstart -o best_edf.yaml
    """
    from dm_search.results.export import export_trial
    from dm_search.training.exported import ExportError, write_export

    if fmt not in (None, "yaml", "json"):
        raise fail(f"--format must be yaml or json; got {fmt!r}")
    writable(output, "--output")
    if fmt is None and output.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise fail(f"--output {output}: give a .yaml or .json name, or say --format yaml|json")
    try:
        doc = export_trial(load_study(study, storage), trial)
    except ExportError as err:
        raise fail(str(err)) from None
    try:
        path = write_export(doc, output, fmt)  # type: ignore[arg-type]
    except OSError as err:
        raise fail(f"cannot write --output {output}: {err}") from None
    from dm_search.edf import EDF
    from dm_search.training.recipe import Recipe

    edf = repr(EDF.from_config(doc["edf"]))
    if doc.get("schedule"):
        edf += (f" -> {EDF.from_config(doc['schedule']['edf_end'])!r} "
                f"({_ramp(doc['schedule'])})")
    console.print(f"wrote {path}: {edf}, normalise={doc['loss']['normalise']}, val_acc "
                  f"{doc['result']['val_acc']:.4f} (study {study}, trial "
                  f"{doc['provenance']['trial']})")
    if doc.get("schedule"):
        console.print("its EDF moves over training: call loss_fn.set_step(step, total_steps) "
                      "before each step", soft_wrap=True)
    for warning in _export_warnings(doc["result"]):
        err_console.print(escape(f"warning: {warning}"), soft_wrap=True, style="bold yellow")
    console.print(f"use it with its recipe ({Recipe.from_dict(doc['recipe']).describe()}): "
                  f"from dm_search import load_loss, load_recipe; loss_fn = "
                  f"load_loss({str(path)!r}); recipe = load_recipe({str(path)!r})",
                  soft_wrap=True)


def _export_warnings(result: dict) -> list[str]:
    """What the export's record says about the EDF's steadiness over seeds."""
    out = []
    race = result.get("race") or {}
    if race.get("unstable"):
        out.append(f"its race runs disagree by {race['spread_points']:.1f} points of validation "
                   "accuracy: its result depends on the seed")
    if result.get("final_unstable"):
        accs = ", ".join(f"{100 * a:.1f}" for a in result.get("final_test_accs") or [])
        out.append(f"its final-stage seeds disagree by {result['final_spread_points']:.1f} "
                   f"points of test accuracy ({accs}%): its result depends on the seed")
    return out


@app.command()
def dashboard(
    storage: Annotated[str | None, typer.Option(help="Database URL.")] = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (1-65535).")] = 8080,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(help="Trial artifacts (default: the folders each study recorded).")
    ] = None,
) -> None:
    """Start optuna-dashboard on the study database: live trials, learning curves, EDF plots.

    Each study records where its trial images are (artifacts/ in its study_dir), so the
    dashboard finds them from the database alone.

    Example: dm-search dashboard   (then open http://127.0.0.1:8080/)
    """
    import socket

    if not 1 <= port <= 65535:
        raise fail(f"--port must be between 1 and 65535; got {port}")
    try:  # refused now, before anything says it is listening
        with socket.create_server((host, port)):
            pass
    except OSError as err:
        raise fail(f"cannot listen on {host}:{port}: {err.strerror or err}. Pick another "
                    "--port (or --host)") from None

    from optuna_dashboard import wsgi

    from dm_search import storage as st
    from dm_search.results.dashboard import ArtifactDirs
    from dm_search.storage.read import DASHBOARD

    store, url = open_store(storage)
    store.subset = DASHBOARD  # what its pages show of a trial, and no more
    dirs = [artifact_dir] if artifact_dir is not None else _artifact_dirs(store, url)
    found = [d for d in dict.fromkeys(dirs) if d.is_dir()]
    if artifact_dir is not None and not found:
        raise fail(f"--artifact-dir {artifact_dir} is not a folder")
    console.print(f"optuna-dashboard for {st.mask_url(url)} on http://{host}:{port}/ "
                  "(Ctrl-C to stop)")
    _serve(wsgi(store, artifact_store=ArtifactDirs(found) if found else None), host, port)


def _serve(app: Any, host: str, port: int) -> None:
    """optuna-dashboard's application on the standard library's server, one thread a request:
    its page asks for a study's importances and its trials at once, and on a large study the
    importances held the trials back seconds (a server of one thread answers in turn). The
    dashboard's own caches are locked for threads. Ctrl-C ends it."""
    import contextlib
    import socket
    import socketserver
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    class Server(socketserver.ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a page left open does not hold up Ctrl-C
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Handler(WSGIRequestHandler):
        def address_string(self) -> str:  # the log line without a reverse DNS lookup
            return str(self.client_address[0])

    with (make_server(host, port, app, server_class=Server, handler_class=Handler) as server,
          contextlib.suppress(KeyboardInterrupt)):
        server.serve_forever()


def _artifact_dirs(store: Any, url: str) -> list[Path]:
    """Each study's recorded artifact folder; a missing one is a warning, not an error."""
    from dm_search import storage as st

    dirs = []
    for s in store.get_all_studies():
        where = st.study_locations(s.system_attrs).get("artifacts")
        if where is None:
            continue
        if Path(where).is_dir():
            dirs.append(Path(where))
        else:
            err_console.print(
                f"[yellow]warning:[/yellow] study {escape(s.study_name)}'s trial images were in "
                f"{escape(where)}, which is missing (moved or deleted): its trials show no "
                "images. Point --artifact-dir at the folder if it moved.", soft_wrap=True)
    beside = st.artifact_dir(url)  # studies written before their folders were recorded
    if beside is not None and beside.is_dir():
        dirs.append(beside)
    return dirs
