"""The HTML report of a study: one self-contained file (plotly.js embedded, works offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from dm_search import storage as st
from dm_search.edf import EDF
from dm_search.figures import (
    best_edf_curves_info,
    curves_info,
    family_info,
    final_info,
    history_info,
    importance_info,
    mode_spread_info,
    plot_curves,
    plot_edf_curves,
    plot_families,
    plot_history,
    plot_importances,
    plot_mode_spread,
)
from dm_search.labels import fmt, loss_label, lr_range

__all__ = ["write_report"]


def write_report(study: Any, path: str | Path) -> Path:
    """One self-contained HTML file (plotly.js embedded, works offline) with every figure."""
    import datetime as dt
    import html

    summary = st.study_summary(study)
    figs: list[tuple[str, go.Figure]] = [
        ("history", plot_history(history_info(study))),
        ("families", plot_families(family_info(study))),
        ("edf", plot_edf_curves(best_edf_curves_info(study),
                                title="EDFs of the best trials against CE (unit area)")),
        ("mode-spread", plot_mode_spread(mode_spread_info(study))),
        ("mean-std", plot_mode_spread(mode_spread_info(study, "moments"))),
        ("importances", plot_importances(importance_info(study))),
        ("learning", plot_curves(curves_info(study, "val_acc"),
                                 "Validation accuracy over epochs", "clean validation accuracy")),
        ("memorisation", plot_curves(curves_info(study, "memorised", k=1),
                                     "Memorisation of wrong labels: best trial against CE",
                                     "fraction of corrupted labels fitted")),
    ]
    if any(st.trial_schedule(t) for t in study.get_trials(deepcopy=False)):
        figs.insert(3, ("emphasis", plot_curves(
            curves_info(study, "mode"), "Emphasis mode over epochs: where each schedule had "
            "moved the emphasis by the end of every epoch (0: hardest examples count most)",
            "emphasis mode")))
    final = final_info(study)
    best = summary["best"]
    spec = st.study_spec(study)
    base = spec.get("base", {})
    noise = base.get("data", {}).get("noise", {})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>dm-search report: {html.escape(study.study_name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;"
        "color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 10px;text-align:right}th{background:#f4f4f4}"
        ".fig{margin:1.5em 0}</style></head><body>",
        f"<h1>Study {html.escape(study.study_name)}</h1>",
        f"<p>Dataset {html.escape(str(base.get('data', {}).get('name')))}, noise "
        f"{html.escape(str(noise.get('kind')))} {noise.get('rate', '')}, model "
        f"{html.escape(str(base.get('model', {}).get('name')))}; "
        f"{summary['trials']} trials ({html.escape(st.reasons_in_words(summary['by_reason']))}); "
        "dm-search "
        f"{html.escape(str(summary['version']))}; dataset fingerprint "
        f"{html.escape(str(summary['fingerprint']))}; generated "
        f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}.</p>",
    ]
    if best:
        parts.append(f"<p><b>Best full-budget trial {best['number']}</b>: "
                     f"{html.escape(loss_label({'edf': best['edf'], **(best['schedule'] or {})}))}"
                     ", clean validation "
                     f"accuracy {best['value']:.4f}.</p>")
    refs = summary.get("references") or []
    if refs:
        parts.append("<h2>Reference baselines (run once, full budget)</h2><table><tr>"
                     "<th>EDF</th><th>clean validation accuracy</th><th>test accuracy</th>"
                     "</tr>")
        for r in refs:
            val, test = fmt(r["value"]), fmt(r["test_acc"])
            parts.append(f"<tr><td style='text-align:left'>"
                         f"{html.escape(str(EDF.from_config(r['edf'])))}</td><td>{val}</td>"
                         f"<td>{test}</td></tr>")
        parts.append("</table>")
    if final.rows:
        parts.append("<h2>Final retrain on the full training set</h2><table><tr><th>EDF</th>"
                     "<th>test accuracy (mean)</th><th>std</th><th>seeds</th></tr>")
        for label, mean, std, n in final.rows:
            parts.append(f"<tr><td style='text-align:left'>{html.escape(label)}</td>"
                         f"<td>{100 * mean:.2f}%</td><td>{100 * std:.2f}</td><td>{n}</td></tr>")
        parts.append(f"</table><p>Gain over CE: {100 * (final.gain or 0):+.2f} points.</p>")
    stage = st.final_stage(study) or {}
    sensitivity = stage.get("lr_sensitivity") or []
    if sensitivity:
        parts.append("<h2>Learning-rate sensitivity</h2><p>The best EDF and CE retrained at "
                     "multiples of their learning rates, to show how far the EDF's advantage "
                     "holds when the rate moves (DM can collapse a few times above its rate; "
                     "the export carries the recipe it was found with). The range below is "
                     "within the tested multiples.</p>"
                     "<table><tr><th>lr multiple</th><th>best EDF lr</th><th>best EDF test "
                     "accuracy</th><th>CE lr</th><th>CE test accuracy</th><th>seeds</th></tr>")
        for r in sensitivity:
            win = " style='font-weight:bold'" if r["best"] > r["ce"] else ""
            parts.append(f"<tr><td>x{r['factor']:g}</td><td>{r['lr_best']:g}</td>"
                         f"<td{win}>{100 * r['best']:.2f}%</td><td>{r['lr_ce']:g}</td>"
                         f"<td>{100 * r['ce']:.2f}%</td><td>{r['seeds']}</td></tr>")
        span = lr_range(stage)
        parts.append("</table><p>" + html.escape(
            f"The best EDF beats CE for lr {span[0]:g} to {span[1]:g}." if span else
            "The best EDF does not beat CE at its own learning rate.") + "</p>")
    for i, (fid, fig) in enumerate(figs):
        parts.append(f"<div class='fig' id='{fid}'>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=(i == 0)))
        parts.append("</div>")
    parts.append("</body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path
