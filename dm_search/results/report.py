"""The HTML report of a study: one self-contained file (plotly.js embedded, works offline),
in sections a paper can draw on: the set-up and provenance, the result with the final stage,
the search's figures, and tables of every family and every trial. ``static`` also writes each
figure as SVG and PNG."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import plotly.graph_objects as go

from dm_search import storage as st
from dm_search.common.labels import (
    duration,
    final_warning,
    fmt,
    loss_label,
    lr_range,
    race_lines,
    reasons_in_words,
)
from dm_search.edf import EDF
from dm_search.results.curves import plot_edf_curves, write_figure
from dm_search.results.figures import (
    MIN_IMPORTANCE_TRIALS,
    READING,
    family_info,
    history_info,
    importance_info,
    mode_spread_info,
    parallel_info,
    plot_families,
    plot_history,
    plot_importances,
    plot_mode_spread,
    plot_parallel,
)
from dm_search.results.learning import (
    best_edf_curves_info,
    curves_info,
    final_curves_info,
    plot_bands,
    plot_curves,
)
from dm_search.results.query import coordinates
from dm_search.results.tables import (
    family_rows,
    final_rows,
    generated,
    pct,
    race_rows,
    setup,
    trial_rows,
)

__all__ = ["STATIC_SIZE", "write_report"]

# Width and height (px) of a figure written for a paper; PNGs at twice that resolution.
STATIC_SIZE = (900, 520)

_STYLE = (
    ".warning{color:#8a4b00;background:#fff6e5;border-left:4px solid #e69500;padding:4px 8px}"
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222;line-height:1.45}table{border-collapse:collapse;margin:0.5em 0 1.5em}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right;font-size:0.92em;"
    "white-space:nowrap}td.l{white-space:normal}.scroll{overflow-x:auto;max-width:100%}"
    "th{background:#f4f4f4}td.l,th.l{text-align:left}caption{caption-side:bottom;"
    "text-align:left;color:#555;font-size:0.9em;padding-top:4px}"
    ".fig{margin:1.5em 0;max-width:100%;overflow:hidden}p.caption{color:#555;font-size:0.9em;"
    "margin-top:0}dl.setup{display:grid;grid-template-columns:max-content 1fr;gap:2px 1em}"
    "dl.setup dt{font-weight:600}dl.setup dd{margin:0}pre{background:#f7f7f7;padding:1em;"
    "overflow-x:auto}"
)


class Figure(NamedTuple):
    id: str
    fig: go.Figure
    caption: str


def _caption(fid: str, extra: str = "") -> str:
    name, text = READING[fid.split("-")[0] if fid.startswith("parallel") else fid]
    return f"{name}: {text}{extra}"


def _esc(v: Any) -> str:
    return html.escape(str(v))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], caption: str,
           left: int = 1, table_id: str = "") -> str:
    """A table with its caption; the first ``left`` columns (names) align left."""
    cls = [" class='l'" if i < left else "" for i in range(len(headers))]
    out = ["<div class='scroll'>", f"<table id='{table_id}'>" if table_id else "<table>",
           f"<caption>{_esc(caption)}</caption><thead><tr>"
           + "".join(f"<th{c}>{_esc(h)}</th>" for h, c in zip(headers, cls, strict=True))
           + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td{c}>{_esc(v)}</td>"
                                    for v, c in zip(row, cls, strict=True)) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figures(study: Any) -> dict[str, list[Figure]]:
    """The report's figures by section."""
    result: list[Figure] = []
    for metric, fid, yaxis in (("test_acc", "learning", "test accuracy"),
                               ("memorised", "memorisation", "share of corrupted labels fitted")):
        band = final_curves_info(study, metric)
        if band is not None:
            result.append(Figure(fid, plot_bands(band, READING[fid][0], yaxis), _caption(fid)))
            continue
        # No final stage with curves: the search's own full-budget runs (the best trials and
        # the CE reference, which ran the whole budget).
        key = "val_acc" if metric == "test_acc" else metric
        info = curves_info(study, key, k=3 if key == "val_acc" else 1)
        title = ("Validation accuracy over epochs during the search" if key == "val_acc"
                 else "Memorisation of wrong labels during the search: best trial against CE")
        result.append(Figure(fid, plot_curves(info, title, yaxis.replace(
            "test", "clean validation")), f"{title}: the search's own runs (no final stage "
            "with learning curves was recorded). " + READING[fid][1]))
    search = [
        Figure("history", plot_history(history_info(study)), _caption("history")),
        Figure("families", plot_families(family_info(study)), _caption("families")),
        Figure("edf", plot_edf_curves(best_edf_curves_info(study),
                                      title="EDFs, the best of each family against CE "
                                            "(unit area)"), _caption("edf")),
        Figure("mode-spread", plot_mode_spread(mode_spread_info(study)),
               _caption("mode-spread")),
        Figure("mean-std", plot_mode_spread(mode_spread_info(study, "moments")),
               _caption("mean-std")),
    ]
    if any(st.trial_schedule(t) for t in study.get_trials(deepcopy=False)):
        search.insert(3, Figure("emphasis", plot_curves(
            curves_info(study, "mode"), "Emphasis mode over epochs: where each schedule had "
            "moved the emphasis by the end of every epoch (0: hardest examples count most)",
            "emphasis mode", percent=False), _caption("emphasis")))
    importances = importance_info(study)
    if importances:  # an empty chart would only say what the text below it says
        search.append(Figure("importances", plot_importances(importances),
                             _caption("importances")))
    for par in parallel_info(study):
        search.append(Figure(f"parallel-{par.family}", plot_parallel(par),
                             _caption("parallel", f" Family {par.family}, "
                                      f"{len(par.numbers)} trials.")))
    return {"result": result, "search": search}


def _figure_html(f: Figure, first: bool) -> str:
    # The figure's number is filled in by _number; its id names its --static files.
    return (f"<div class='fig' id='{f.id}'>"
            + f.fig.to_html(full_html=False, include_plotlyjs=first,
                            config={"responsive": True})
            + f"<p class='caption'><b>Figure {{n}}</b> ({f.id}.svg). {_esc(f.caption)}</p>"
            "</div>")


def _number(parts: list[str]) -> list[str]:
    """Tables and figures numbered in reading order, as a paper cites them."""
    count = {"Table": 0, "Figure": 0}
    out = []
    for part in parts:
        for kind, mark, numbered in (("Table", "<caption>", "<caption><b>Table {}.</b> "),
                                     ("Figure", "<b>Figure {n}</b>", "<b>Figure {}</b>")):
            pieces = part.split(mark)
            for i in range(1, len(pieces)):
                count[kind] += 1
                pieces[i] = numbered.format(count[kind]) + pieces[i]
            part = "".join(pieces)
        out.append(part)
    return out


def _final_section(study: Any) -> list[str]:
    final = st.final_stage(study) or {}
    if not final:
        return ["<p>No final stage was run (the spec's final.enabled, or no trial ran its full "
                "budget).</p>"]
    rows = [(r.label, f"{100 * r.test_mean:.2f} ± {100 * r.test_std:.2f}", pct(r.memorised, 1),
             r.seeds, r.epochs) for r in final_rows(study)]
    out = [_table(["EDF", "test accuracy (%, mean ± std over seeds)",
                   "memorised (share of corrupted labels fitted, mean)", "seeds", "epochs"],
                  rows, "The best EDF and CE retrained on the full training set (training and "
                  "validation splits) and tested on the clean test set. Memorisation is the "
                  "clearest why: the share of the corrupted labels each ends up fitting.",
                  table_id="final"),
           f"<p>Gain over CE: <b>{100 * (final.get('gain') or 0):+.2f} points</b> of test "
           "accuracy.</p>"]
    warning = final_warning(final)
    if warning:
        out.append(f"<p class='warning'><b>Warning:</b> "
                   f"{_esc(warning.removeprefix('warning: '))}</p>")
    sensitivity = final.get("lr_sensitivity") or []
    if sensitivity:
        out.append("<h3>Learning-rate sensitivity</h3>")
        span = lr_range(final)
        lr_rows = [(f"x{r['factor']:g}", f"{r['lr_best']:g}", pct(r["best"]), f"{r['lr_ce']:g}",
                 pct(r["ce"]), r["seeds"]) for r in sensitivity]
        out.append(_table(
            ["lr multiple", "best EDF lr", "best EDF test accuracy", "CE lr",
             "CE test accuracy", "seeds"], lr_rows,
            "The best EDF and CE retrained at multiples of their learning rates, to show how "
            "far the EDF's advantage holds when the rate moves (DM can collapse a few times "
            "above its rate; the export carries the recipe it was found with). "
            + (f"The best EDF beats CE for lr {span[0]:g} to {span[1]:g}" if span else
               "The best EDF does not beat CE at its own learning rate")
            + f" (rates tried: {', '.join(r[0] for r in lr_rows)} of each one's own; the "
            "seeds per rate are in the last column).",
            table_id="lr-sensitivity"))
    return out


def _race_section(study: Any) -> list[str]:
    rows, record = race_rows(study)
    if not rows:
        return []
    n = max(len(r.runs) for r in rows)
    head = ["trial", "EDF", "search run", *[f"seed +{k}" for k in range(1, n)],
            "mean ± std", "spread (points)", "verdict"]
    body = [(r.trial, r.label, *[fmt(v) for v in r.runs + [None] * (n - len(r.runs))],
             f"{fmt(r.mean)} ± {fmt(r.std)}", f"{r.spread:.1f}",
             r.verdict + (" (unstable)" if r.unstable else "")) for r in rows]
    rule = ("the mean over runs" if record.get("rule") == "mean" else
            "the mean less one standard error")
    out = ["<h3>Race</h3>", _table(
        head, body, f"The top {len(rows)} distinct full-budget configurations trained again "
        "with new training seeds on the search's split (the same data, noise and clean "
        f"validation split). A run's score is the mean of its last {record.get('window', 1)} "
        f"epochs' validation accuracy; the winner has the best {rule}. A candidate that could "
        "not catch the leader after a round is out; a failed (diverged or collapsed) run "
        f"scores 0. Runs that disagree by more than "
        f"{record.get('unstable_points', 2.0):g} points are marked unstable.",
        left=2, table_id="race")]
    out += [f"<p class='warning'><b>Warning:</b> {_esc(w.removeprefix('warning: '))}</p>"
            for w in race_lines(record) if w.startswith("warning")]
    return out


def _references_in_words(n: int) -> str:
    return "" if not n else f", and {n} reference baseline{'s' if n > 1 else ''}"


def write_report(study: Any, path: str | Path, *, static: str | Path | None = None) -> Path:
    """Write the report; with ``static``, also every figure as ``<id>.svg`` and ``<id>.png``
    in that folder. Returns the report's path."""
    from dm_search.training.config import dump_yaml

    summary = st.study_summary(study)
    figs = _figures(study)
    shown = figs["result"] + figs["search"]
    drawn = [_figure_html(f, i == 0) for i, f in enumerate(shown)]
    n_result = len(figs["result"])
    parts = [*_head(study, summary), *_best_section(summary), *_race_section(study),
             *_final_section(study), *drawn[:n_result], "<h2 id='search'>Search</h2>",
             *_search_tables(study, summary), *drawn[n_result:]]
    if not any(f.id == "importances" for f in figs["search"]):
        parts.append(f"<p>No parameter importances: no family has two sampled parameters and "
                     f"{MIN_IMPORTANCE_TRIALS} full-budget trials to rank them with.</p>")
    parts += [*_trials_section(study), "<h2 id='spec'>Spec</h2>",
              f"<pre>{_esc(dump_yaml(st.study_spec(study)).rstrip())}</pre>", "</body></html>"]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(_number(parts)))
    if static is not None:
        folder = Path(static)
        folder.mkdir(parents=True, exist_ok=True)
        for f in shown:
            for suffix in (".svg", ".png"):
                write_figure(f.fig, folder / f"{f.id}{suffix}", size=STATIC_SIZE)
    return path


def _head(study: Any, summary: dict[str, Any]) -> list[str]:
    name = _esc(study.study_name)
    return ["<!doctype html><html><head><meta charset='utf-8'>",
            "<meta name='viewport' content='width=device-width,initial-scale=1'>",
            f"<title>dm-search report: {name}</title><style>{_STYLE}</style></head><body>",
            f"<h1>Study {name}</h1>",
            f"<p>{summary['trials']} trials: {_esc(reasons_in_words(summary['by_reason']))}"
            f" ({summary['searched']} of {fmt(summary['n_trials'], 'd')} searched trials ran"
            f"{_references_in_words(len(summary.get('references') or []))})."
            f" Report generated {generated()}.</p>",
            "<h2 id='set-up'>Set-up</h2><dl class='setup'>",
            *[f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in setup(study)],
            "</dl>", "<h2 id='result'>Result</h2>"]


def _best_section(summary: dict[str, Any]) -> list[str]:
    best = summary["best"]
    if not best:
        return ["<p>No searched trial has run its full budget yet.</p>"]
    edf = EDF.from_config(best["edf"])
    label = loss_label({"edf": best["edf"], **(best["schedule"] or {})})
    return [
        f"<p><b>Best full-budget trial {best['number']}</b>: {_esc(label)} "
        f"({_esc(coordinates(edf))}, in units of p), in its search run (one seed, "
        f"trained on the training split): clean validation accuracy {pct(best['value'])}, "
        f"test accuracy {pct(best.get('test_acc'))}, memorised "
        f"{pct(best.get('memorised'), 1)} of the corrupted labels. The final stage below "
        "retrains it on the whole training set with several seeds. Export it as a loss "
        f"with <code>dm-search export {_esc(summary['name'])} -o best_edf.yaml</code>.</p>"]


def _search_tables(study: Any, summary: dict[str, Any]) -> list[str]:
    parts = []
    fam = family_rows(study)
    if fam:
        parts.append(_table(
            ["family", "trials", "full budget", "early-stopped", "failed", "best val acc",
             "median val acc (full budget)", "best's test acc", "best's memorised",
             "best trial"],
            [(r.family, r.trials, r.full, r.early, r.failed, pct(r.best_val), pct(r.median_val),
              pct(r.best_test), pct(r.best_memorised, 1), r.best) for r in fam],
            "Each searched family: how its trials ended and how its best did. Validation "
            "accuracy is on clean held-out labels; memorised is the share of the corrupted "
            "training labels fitted.", table_id="families-table"))
    refs = summary.get("references") or []
    if refs:
        parts.append(_table(
            ["EDF", "clean validation accuracy", "test accuracy", "memorised"],
            [(str(EDF.from_config(r["edf"])), pct(r["value"]), pct(r["test_acc"]),
              pct(r["memorised"], 1)) for r in refs],
            "Reference baselines, run once at full budget with the study's recipe, as searched "
            "trials are (one seed, the training split): what every searched EDF is compared "
            "with. The final stage's CE is this one retrained on the whole training set.",
            table_id="references"))
    return parts


def _trials_section(study: Any) -> list[str]:
    return ["<h2 id='trials'>Every trial</h2>", _table(
        ["trial", "family", "EDF", "coordinates (p units; spread: concentration)",
         "val acc", "test acc", "memorised", "epochs", "stop reason", "wall time"],
        [(f"{r.number}{' (ref)' if r.reference else ''}", r.family, r.edf, r.coords,
          pct(r.val), pct(r.test), pct(r.memorised, 1), r.epochs, r.stop, duration(r.wall_s))
         for r in trial_rows(study)], "Every trained trial: full-budget ones first, each group "
        "by validation accuracy. An early-stopped trial's accuracies are those of the epoch it "
        "stopped at.", left=4, table_id="trials-table")]
