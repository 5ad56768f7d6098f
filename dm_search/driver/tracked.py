"""The study's trackers (MLflow, TensorBoard) from the driver's side: refused before anything
runs when their extra is missing, opened with the study, and given the report and the best EDF
when it ends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from dm_search import storage as st
from dm_search.results.tracking import Tracking, missing_extras, open_tracking
from dm_search.study.spec import StudySpec
from dm_search.training.config import ConfigError

__all__ = ["check_tracking", "end_tracking", "start_tracking"]


def check_tracking(spec: StudySpec) -> None:
    """ConfigError naming the extra to install, for a tracker the spec asks for."""
    missing = missing_extras(spec.tracking.model_dump())
    if missing:
        extras = ", ".join(f'pip install "dm-search[{m}]"' for m in missing)
        raise ConfigError(f"spec {spec.name!r} asks for tracking in {', '.join(missing)}, which "
                          f"is not installed: {extras} (or remove tracking.{missing[0]})")


def start_tracking(spec: StudySpec, say: Callable[[str], None]) -> Tracking:
    tracker = open_tracking(spec.tracking.model_dump(), spec.name, Path(spec.study_dir), say)
    if tracker:
        base = spec.base_config()
        tracker.study_started(spec.name, {
            "dataset": base.data.name if base.data else "(the trainer's own)",
            "noise": f"{base.data.noise.kind}:{base.data.noise.rate}" if base.data else "",
            "model": base.model.name, "trainer": base.trainer or "built-in",
            "families": ",".join(spec.space.families),
            "searched": ",".join(spec.space.params), "sampler": spec.sampler.name,
            "scheduler": spec.scheduler.name, "n_trials": spec.n_trials,
            "budget_epochs": spec.budget_epochs, "baselines": ",".join(spec.baselines)})
    return tracker


def end_tracking(tracker: Tracking, spec: StudySpec, study: optuna.Study | None, *,
                 failed: bool = False) -> None:
    """Close the trackers; a study that ended well gives MLflow its report and best EDF."""
    if not tracker:
        return
    files: list[Path] = []
    if not failed and study is not None and spec.tracking.mlflow is not None:
        files = _artifacts(spec, study)
    tracker.study_ended(files, failed=failed)


def _artifacts(spec: StudySpec, study: optuna.Study) -> list[Path]:
    from dm_search.results.export import export_trial
    from dm_search.results.report import write_report
    from dm_search.training.exported import write_export

    folder = Path(spec.study_dir) / "tracking" / spec.name
    files = [write_report(study, folder / "report.html")]
    if st.best_trial(study) is not None:
        doc: dict[str, Any] = export_trial(study)
        write_export(doc, folder / "best_edf.yaml")
        files.append(folder / "best_edf.yaml")
    return files
