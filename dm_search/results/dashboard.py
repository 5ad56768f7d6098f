"""What optuna-dashboard shows of a study: the study-level figures, kept up to date while the
study runs, a note on every trial, and per-trial images as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from dm_search import storage as st
from dm_search.common.labels import final_warning, fmt, race_lines, reasons_in_words
from dm_search.edf import EDF
from dm_search.results.curves import plot_edf_curves
from dm_search.results.figures import (
    READING,
    family_info,
    history_info,
    mode_spread_info,
    plot_families,
    plot_history,
    plot_mode_spread,
)
from dm_search.results.learning import best_edf_curves_info
from dm_search.results.query import edf_of, finished_trials, is_finite, schedule_of
from dm_search.results.tables import final_rows, pct, race_rows, setup

__all__ = ["DASHBOARD_FIGURES", "ArtifactDirs", "study_figures", "study_note", "trial_note",
           "update_dashboard", "upload_figure"]


class ArtifactDirs:
    """Trial artifacts from several folders as one optuna artifact store: one dashboard shows
    every study of a database, and each study keeps its artifacts in its own study_dir."""

    def __init__(self, dirs: list[Path]) -> None:
        from optuna.artifacts import FileSystemArtifactStore

        self.dirs = dirs
        self.stores = [FileSystemArtifactStore(str(d)) for d in dirs]

    def _holding(self, artifact_id: str) -> Any:
        for folder, store in zip(self.dirs, self.stores, strict=True):
            if (folder / artifact_id).is_file():
                return store
        return None

    def open_reader(self, artifact_id: str) -> Any:
        from optuna.artifacts.exceptions import ArtifactNotFound

        store = self._holding(artifact_id)
        if store is None:
            raise ArtifactNotFound(f"artifact {artifact_id} is in none of {self.dirs}")
        return store.open_reader(artifact_id)

    def write(self, artifact_id: str, content_body: Any) -> None:
        self.stores[0].write(artifact_id, content_body)

    def remove(self, artifact_id: str) -> None:
        store = self._holding(artifact_id)
        if store is not None:
            store.remove(artifact_id)


DASHBOARD_FIGURES = ("dm-edf-curves", "dm-families", "dm-mode-spread", "dm-mean-std",
                     "dm-history")


def study_figures(study: Any) -> dict[str, go.Figure]:
    """The figures kept up to date in the dashboard, by graph-object id."""
    return {
        "dm-edf-curves": plot_edf_curves(best_edf_curves_info(study),
                                         title=READING["edf"][0]),
        "dm-families": plot_families(family_info(study)),
        "dm-mode-spread": plot_mode_spread(mode_spread_info(study)),
        "dm-mean-std": plot_mode_spread(mode_spread_info(study, "moments")),
        "dm-history": plot_history(history_info(study)),
    }


def trial_note(t: Any) -> str:
    """A readable Markdown note on a trial for the dashboard."""
    edf = edf_of(t)
    final = st.trial_final(t)
    ref = " (reference baseline)" if st.is_reference(t) else ""
    lines = [f"## {edf.family} — {edf}{ref}",
             f"- emphasis mode: {'-' if edf.mode is None else f'{edf.mode:.3f}'}, "
             f"spread: {'-' if edf.spread is None else f'{edf.spread:.3g}'}",
             f"- emphasis density: mean {edf.mean:.3f}, std {edf.std:.3f}",
             *_schedule_lines(t),
             f"- stop reason: **{st.stop_reason(t)}**, epochs "
             f"{fmt(st.trial_epochs(t)[0], 'd')}/{fmt(st.trial_epochs(t)[1], 'd')}"]
    for key, name in (("val_acc", "clean validation accuracy"), ("test_acc", "test accuracy"),
                      ("memorised", "memorised (noisy labels fitted)"),
                      ("noisy_weight_share", "DM weight on noisy labels")):
        if is_finite(final.get(key)):
            lines.append(f"- {name}: {final[key]:.4f}")
    node = st.trial_node(t)
    if node:
        lines.append(f"- node: {node.get('ip')} ({str(node.get('id'))[:12]})")
    return "\n".join(lines)


def _schedule_lines(t: Any) -> list[str]:
    sched = schedule_of(t)
    if sched is None:
        return []
    end, r = sched.end, sched.ramp
    return [f"- emphasis schedule: moves to **{end}** (mode "
            f"{'-' if end.mode is None else f'{end.mode:.3f}'}, spread "
            f"{'-' if end.spread is None else f'{end.spread:.3g}'}), {r.shape} from "
            f"{r.start:.0%} to {r.end:.0%} of the budget, in {sched.coords} coordinates"]


# The dashboard's figures in the note's "Reading the figures", and Optuna's own panel.
_NOTE_FIGURES = ("edf", "families", "mode-spread", "mean-std", "history")
_OPTUNA_IMPORTANCE = (
    "Hyperparameter Importance (Optuna's own panel)", "computed over the whole conditional "
    "space: a family's parameters exist only in its own trials, so a high importance for, "
    "say, gce.mode mostly says that the family matters. `dm-search report` shows the "
    "importance within each family, with the number of trials it rests on.")


def study_note(study: Any) -> str:
    """The study's Markdown note for the dashboard: what was searched, the best EDF and how to
    use it, the final stage, how to read the figures, and the spec."""
    from dm_search.training.config import dump_yaml

    summary = st.study_summary(study)
    spec = st.study_spec(study)
    lines = [f"# {study.study_name}", "",
             f"Trials: {reasons_in_words(summary['by_reason'])} "
             f"({summary['searched']} of {fmt(summary['n_trials'], 'd')} searched).", "",
             "## Set-up", *[f"- {name}: {text}" for name, text in setup(study)]]
    best = summary.get("best")
    if best:
        edf = EDF.from_config(best["edf"])
        lines += ["", "## Best EDF",
                  f"**{edf}** (trial {best['number']}): clean validation accuracy "
                  f"{100 * best['value']:.2f}%"
                  + (f", test accuracy {100 * best['test_acc']:.2f}%"
                     if is_finite(best.get("test_acc")) else "")
                  + (f", memorised {100 * best['memorised']:.1f}% of the noisy labels"
                     if is_finite(best.get("memorised")) else "") + ".",
                  "", "Export it with its training recipe, then use it as a loss:", "",
                  "```bash", f"dm-search export {study.study_name} -o best_edf.yaml", "```",
                  "```python", "from dm_search import load_loss, load_recipe",
                  'loss_fn, recipe = load_loss("best_edf.yaml"), load_recipe("best_edf.yaml")',
                  "```"]
    rows, record = race_rows(study)
    if rows:
        n = max(len(r.runs) for r in rows)
        lines += ["", "## Race: the top candidates on new seeds", "",
                  f"Each run's score is the mean of its last {record.get('window', 1)} epochs' "
                  f"validation accuracy; the winner has the best {record.get('rule')} over its "
                  "runs.", "",
                  "| trial | EDF | " + " | ".join(["search run"] + [f"seed +{k}" for k in
                                                                    range(1, n)])
                  + " | mean ± std | spread | verdict |",
                  "| --- " * (n + 5) + "|"]
        for row in rows:
            cells = [fmt(v) for v in row.runs + [None] * (n - len(row.runs))]
            lines.append(f"| {row.trial} | {row.label} | " + " | ".join(cells)
                         + f" | {fmt(row.mean)} ± {fmt(row.std)} | {row.spread:.1f} points | "
                         f"{row.verdict}{' (unstable)' if row.unstable else ''} |")
        lines += [f"\n**{w}**" for w in race_lines(record) if w.startswith("warning")]
    final = summary.get("final_stage")
    if final:
        lines += ["", "## Final stage: retrained on the full training set", "",
                  "| EDF | test accuracy | memorised | seeds |", "| --- | --- | --- | --- |"]
        for r in final_rows(study):
            lines.append(f"| {r.label} | {100 * r.test_mean:.2f} ± {100 * r.test_std:.2f}% | "
                         f"{pct(r.memorised, 1)} | {r.seeds} |")
        lines += ["", f"Gain over CE: {100 * final['gain']:+.2f} points of test accuracy."]
        warning = final_warning(final)
        if warning:
            lines += ["", f"**{warning}**"]
    lines += ["", "## Reading the figures",
              *[f"- **{READING[fid][0]}**: {READING[fid][1]}" for fid in _NOTE_FIGURES],
              f"- **{_OPTUNA_IMPORTANCE[0]}**: {_OPTUNA_IMPORTANCE[1]}",
              "", "## Spec", "", "```yaml", dump_yaml(spec).rstrip(), "```"]
    return "\n".join(lines)


def save_study_note(study: Any) -> None:
    from optuna_dashboard import save_note

    save_note(study, study_note(study))


def save_trial_note(study: Any, trial: Any) -> None:
    import optuna
    from optuna_dashboard import save_note

    save_note(optuna.trial.Trial(study, trial._trial_id), trial_note(trial))


def update_dashboard(study: Any, *, notes: bool = True) -> None:
    """Refresh the study-level figures (and the trial notes) that optuna-dashboard shows."""
    from optuna_dashboard import save_plotly_graph_object

    for gid, fig in study_figures(study).items():
        save_plotly_graph_object(study, fig, graph_object_id=gid)
    save_study_note(study)
    if notes:
        for t in finished_trials(study):
            save_trial_note(study, t)


def upload_figure(trial: Any, fig: go.Figure, name: str, store: Any) -> None:
    """Attach ``fig`` to a RUNNING trial as an SVG artifact (shown in the dashboard)."""
    import tempfile

    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        fig.write_image(path, format="svg")
        upload_artifact(study_or_trial=trial, file_path=str(path), artifact_store=store,
                        mimetype="image/svg+xml")
