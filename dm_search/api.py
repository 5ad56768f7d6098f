"""The Python API: run a study from a script or a notebook, with a training loop of your own.

    import dm_search

    def train(trial):                       # called once per trial, with a TrialContext
        model = make_net().to(trial.device)
        opt = trial.recipe.optimizer(model.parameters())
        for epoch in range(1, trial.epochs + 1):
            ...                             # your loop, with trial.loss as the loss
            trial.report(epoch=epoch, val_acc=accuracy(model, trial.data.x_val, ...))

    result = dm_search.search("my_spec.yaml", trainer=train)
    print(result.best_edf, result.final_table())
    result.export("best_edf.yaml")

``search`` runs the same study as ``dm-search submit`` (storage, resume, early stopping, races,
final stage, dashboard) and returns a :class:`SearchResult`.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dm_search.common import plugins
from dm_search.edf import EDF
from dm_search.study.reading import load_spec, spec_from_dict
from dm_search.study.spec import StudySpec

__all__ = ["SearchResult", "search"]


@dataclass
class SearchResult:
    """A finished study: its winner, its final-stage table, and its export."""

    name: str
    storage: str
    summary: dict[str, Any]

    def _study(self) -> Any:
        import optuna

        return optuna.load_study(study_name=self.name, storage=self.storage)

    @property
    def best_trial(self) -> int | None:
        """The winning trial's number (after the race, when the study raced)."""
        best = self.summary.get("best") or {}
        return best.get("number")

    @property
    def best_edf(self) -> EDF | None:
        """The winning EDF (None when no trial ran its full budget)."""
        edf = (self.summary.get("best") or {}).get("edf")
        return EDF.from_config(edf) if edf else None

    @property
    def best_value(self) -> float | None:
        """The winner's clean validation accuracy as the study ranks it."""
        return (self.summary.get("best") or {}).get("value")

    @property
    def final(self) -> dict[str, Any] | None:
        """The final stage's record (the best EDF and CE retrained over seeds), or None."""
        from dm_search import storage as st

        return st.final_stage(self._study())

    def final_table(self) -> list[dict[str, Any]]:
        """The final stage as rows: label, mean and std of the test accuracy over the seeds,
        memorisation, seeds, epochs (empty without a final stage)."""
        from dm_search.results.tables import final_rows

        return [row._asdict() for row in final_rows(self._study())]

    def export(self, path: str | Path, trial: int | None = None) -> Path:
        """Write the winning EDF (or trial ``trial``'s) with its recipe, as ``dm-search
        export`` does: the file ``dm_search.load_loss`` and ``load_recipe`` read."""
        from dm_search.results.export import export_trial
        from dm_search.training.exported import write_export

        return write_export(export_trial(self._study(), trial), path)


def search(spec: str | Path | Mapping[str, Any] | StudySpec,
           trainer: Callable[..., Any] | str | None = None, *, storage: str | None = None,
           address: str | None = None, name: str | None = None,
           resume: bool = False, quiet: bool = False) -> SearchResult:
    """Run (or resume) a study and return its result.

    Args:
        spec: a study spec: a YAML file, a shipped spec's name ("quickstart"), a dict with the
            same keys, or a StudySpec.
        trainer: your training loop, ``train(trial)`` (a function, or "module:function"). It
            becomes the spec's ``base.trainer``. A function defined in the running script or
            notebook is sent to the workers by value; on a cluster, name the folder of any
            module it imports in the spec's ``code:``.
        storage: the study database URL (default: $DM_SEARCH_STORAGE, the spec's, or SQLite in
            the spec's study_dir).
        address: a Ray cluster (auto, HOST:6379); default: a Ray on this machine.
        name: the study's name, in place of the spec's.
        resume: continue the study of that name (True), its completed trials kept.
        quiet: print nothing while the study runs.

    Raises:
        ConfigError: the spec, the trainer or the data is unusable (said before Ray starts).
        KeyboardInterrupt: Ctrl-C stopped the study; what completed is kept, and
            ``search(..., resume=True)`` continues it.
    """
    from dm_search import storage as st
    from dm_search.driver import cluster, runner, signals

    study_spec = _as_spec(spec, name, _trainer_ref(trainer))
    url = st.resolve_url(storage, study_spec)

    def say(msg: str) -> None:
        if not quiet:
            stamp = datetime.datetime.now().strftime("%H:%M:%S")
            print(f"{stamp} {msg}", flush=True)

    again = f"dm_search.search(..., name={study_spec.name!r}, resume=True)"
    # A Ray this call starts is shut down at its end: the next call (in a notebook, say) then
    # starts one with its own code folder and address. A Ray the caller started stays.
    ours = not cluster.ray_running()
    try:
        outcome = runner.run_study(study_spec, storage_url=url, address=address,
                                   resume=st.Resume.EXISTING if resume else st.Resume.NEW,
                                   say=say, resume_command=again)
    except signals.StudyInterrupted as stopped:
        say(f"study {study_spec.name!r} stopped by {stopped}; its completed trials are kept. "
            f"Resume it with {again}")
        raise KeyboardInterrupt(str(stopped)) from None
    finally:
        if ours:
            cluster.leave_ray()
    return SearchResult(study_spec.name, url, outcome.summary)


def _as_spec(spec: str | Path | Mapping[str, Any] | StudySpec, name: str | None,
             trainer: str | None) -> StudySpec:
    if isinstance(spec, StudySpec):
        if trainer is None and name is None:
            return spec
        # Validated again with the change (a name's pattern, $DM_SEARCH_STUDY_DIR). Its base
        # was filled in when it was validated: give a dict or a file for a trainer that brings
        # its own data, or its base keeps the default dataset.
        spec = spec.model_dump(mode="json")
    if isinstance(spec, Mapping):
        return spec_from_dict(dict(spec), name=name, trainer=trainer)
    return load_spec(spec, name=name, trainer=trainer)


def _trainer_ref(trainer: Callable[..., Any] | str | None) -> str | None:
    """A trainer's reference; a function is provided to this process's resolver and, through
    the driver, to every worker (by value: a script's or a notebook's own function too)."""
    if trainer is None or isinstance(trainer, str):
        return trainer
    ref = plugins.reference_of(trainer)
    plugins.provide(ref, trainer)
    return ref
