"""A study's runs in the trackers teams already use: MLflow and TensorBoard.

Both are optional (``pip install "dm-search[mlflow]"``, ``[tensorboard]``) and off by default;
a spec turns them on in its ``tracking:`` section. The driver tells a :class:`Tracking` what
happens (a trial starts, reports an epoch, ends; the final stage's runs; the study ends) and
each backend writes it its own way:

- MLflow (``tracking_uri``: a server, or a database such as ``sqlite:///mlflow.db``; default
  ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the study's folder): one parent run per
  study and one nested run per trial, reference and final-stage run, with the EDF in both
  coordinate pairs and every searched hyperparameter as params, every epoch's metrics
  (step = epoch), the stop reason as a tag, and the report and the exported best EDF as the
  parent's artifacts.
- TensorBoard: one event-file folder per trial under the study's folder, one scalar per
  metric, so that ``tensorboard --logdir <study_dir>/tensorboard`` shows every trial.

A tracker that fails (a tracking server that is down) never stops a study: the study warns
once and goes on without it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["EXTRAS", "Tracking", "missing_extras", "open_tracking", "trial_params"]

# What each tracker needs installed, and the extra that installs it.
EXTRAS = {"mlflow": ("mlflow", "mlflow"), "tensorboard": ("tensorboard", "tensorboard")}
ROLE_TAG = "dm_search.role"  # study, trial, reference or final
STUDY_TAG = "dm_search.study"


def missing_extras(tracking: Mapping[str, Any]) -> list[str]:
    """The extras a ``tracking:`` section asks for that are not installed."""
    wanted = [k for k in EXTRAS if tracking.get(k)]
    return [EXTRAS[k][1] for k in wanted if importlib.util.find_spec(EXTRAS[k][0]) is None]


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out[k] = f
    return out


def trial_params(cfg: Mapping[str, Any], searched: list[str]) -> dict[str, Any]:
    """A trial's parameters as trackers show them: its EDF (family, parameters, and both
    coordinate pairs), its schedule's end where it moves, and every searched hyperparameter
    (by its dotted path)."""
    from dm_search.edf import EDF

    loss = cfg["loss"]
    params: dict[str, Any] = {}
    for prefix, raw in (("edf", loss["edf"]), ("edf_end", loss.get("edf_end"))):
        if not raw:
            continue
        edf = EDF.from_config(raw)
        params[f"{prefix}.family"] = edf.family
        params.update({f"{prefix}.{k}": v for k, v in edf.params.items()})
        params.update({f"{prefix}.{k}": v for k, v in
                       (("mode", edf.mode), ("spread", edf.spread),
                        ("mean", round(edf.mean, 6)), ("std", round(edf.std, 6)))
                       if v is not None})
    for path in searched:
        node: Any = cfg
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        params[path] = node
    params["loss.normalise"] = loss.get("normalise")
    params["loss.eps"] = loss.get("eps")
    return params


class _Backend:
    """What a tracker is told; each method may raise, which Tracking turns into one warning."""

    name = "tracker"

    def study_started(self, study: str, params: dict[str, Any]) -> None: ...
    def trial_started(self, key: str, role: str, name: str, params: dict[str, Any]) -> None: ...
    def epoch(self, key: str, step: int, metrics: dict[str, float]) -> None: ...
    def trial_ended(self, key: str, tags: dict[str, str], failed: bool) -> None: ...
    def study_ended(self, artifacts: list[Path], failed: bool) -> None: ...


class _MLflow(_Backend):
    name = "MLflow"

    def __init__(self, tracking_uri: str, experiment: str, artifacts: Path) -> None:
        # A server that is down must cost seconds, not MLflow's default minutes of retries.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its set-up lines, every study
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment = experiment
        # A local store keeps its artifacts beside the study, not in the working directory.
        self.artifacts = artifacts if tracking_uri.startswith(("sqlite:", "file:")) else None
        self.parent: str | None = None
        self.runs: dict[str, str] = {}

    def study_started(self, study: str, params: dict[str, Any]) -> None:
        got = self.client.get_experiment_by_name(self.experiment)
        exp_id = got.experiment_id if got else self.client.create_experiment(
            self.experiment, artifact_location=self.artifacts.resolve().as_uri()
            if self.artifacts else None)
        # A resumed study goes on in its parent run.
        found = self.client.search_runs(
            [exp_id], filter_string=f"tags.`{STUDY_TAG}` = '{study}' and "
                                    f"tags.`{ROLE_TAG}` = 'study'", max_results=1)
        if found:
            self.parent = found[0].info.run_id
            self.client.update_run(self.parent, status="RUNNING")
        else:
            run = self.client.create_run(exp_id, run_name=study,
                                         tags={STUDY_TAG: study, ROLE_TAG: "study"})
            self.parent = run.info.run_id
            self._params(self.parent, params)
        self.exp_id = exp_id
        self.study = study

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items() if v is not None]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run_id, params=items[i:i + 100])

    def trial_started(self, key: str, role: str, name: str, params: dict[str, Any]) -> None:
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        assert self.parent is not None
        run = self.client.create_run(self.exp_id, run_name=name, tags={
            MLFLOW_PARENT_RUN_ID: self.parent, STUDY_TAG: self.study, ROLE_TAG: role})
        self.runs[key] = run.info.run_id
        self._params(run.info.run_id, params)

    def epoch(self, key: str, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        if key not in self.runs:  # a trial that started before the tracker did
            return
        now = int(time.time() * 1000)
        self.client.log_batch(self.runs[key], metrics=[Metric(k, v, now, step)
                                                       for k, v in metrics.items()])

    def trial_ended(self, key: str, tags: dict[str, str], failed: bool) -> None:
        from mlflow.entities import RunTag

        run_id = self.runs.pop(key, None)
        if run_id is None:
            return
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")

    def study_ended(self, artifacts: list[Path], failed: bool) -> None:
        assert self.parent is not None
        for path in artifacts:
            self.client.log_artifact(self.parent, str(path))
        self.client.set_terminated(self.parent, status="FAILED" if failed else "FINISHED")


class _TensorBoard(_Backend):
    name = "TensorBoard"

    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.folder = folder
        self.make = SummaryWriter
        self.writers: dict[str, Any] = {}

    def trial_started(self, key: str, role: str, name: str, params: dict[str, Any]) -> None:
        self.writers[key] = self.make(log_dir=str(self.folder / key))

    def epoch(self, key: str, step: int, metrics: dict[str, float]) -> None:
        writer = self.writers.get(key)
        if writer is None:
            return
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)

    def trial_ended(self, key: str, tags: dict[str, str], failed: bool) -> None:
        writer = self.writers.pop(key, None)
        if writer is None:
            return
        writer.add_text("stop_reason", tags.get("stop_reason", ""))
        writer.close()

    def study_ended(self, artifacts: list[Path], failed: bool) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


class Tracking:
    """The study's trackers (none, one or both). Every call is guarded: a tracker that raises
    is dropped after one warning, and the study goes on."""

    def __init__(self, backends: list[_Backend], say: Callable[[str], None]) -> None:
        self.backends = backends
        self.say = say

    def __bool__(self) -> bool:
        return bool(self.backends)

    def _each(self, what: str, *args: Any) -> None:
        for backend in list(self.backends):
            try:
                getattr(backend, what)(*args)
            except Exception as err:  # a tracker's failure is never the study's
                self.backends.remove(backend)
                msg = (f"{backend.name} tracking stopped: {str(err).splitlines()[0]}; the "
                       "study goes on without it")
                self.say(f"warning: {msg}")
                warnings.warn(msg, stacklevel=2)

    def study_started(self, study: str, params: dict[str, Any]) -> None:
        self._each("study_started", study, params)

    def trial_started(self, key: str, role: str, name: str, params: dict[str, Any]) -> None:
        self._each("trial_started", key, role, name, params)

    def epoch(self, key: str, step: int, metrics: Mapping[str, Any]) -> None:
        if self.backends:  # called at every epoch of every study, tracked or not
            self._each("epoch", key, step, _finite(metrics))

    def trial_ended(self, key: str, stop_reason: str, *, failed: bool = False) -> None:
        self._each("trial_ended", key, {"stop_reason": stop_reason}, failed)

    def final_stage(self, result: Mapping[str, Any]) -> None:
        """Each final-stage run as a run of its own, tagged final, with its curves."""
        for side in ("best", "ce"):
            for i, run in enumerate(result.get(side, {}).get("runs") or []):
                key = f"final_{side}_{i}"
                edf = result[side]["edf"]
                self.trial_started(key, "final", f"final: {side} seed {run.get('seed', i)}",
                                   {"edf.family": edf.get("family"), "seed": run.get("seed"),
                                    "trial": result[side].get("trial")})
                for point in run.get("history") or []:
                    self.epoch(key, int(point.get("epoch", 0)), point)
                self.epoch(key, int(run.get("epochs") or 0), {"test_acc": run.get("test_acc")})
                self.trial_ended(key, "final stage")

    def study_ended(self, artifacts: list[Path], *, failed: bool = False) -> None:
        self._each("study_ended", artifacts, failed)


def open_tracking(tracking: Mapping[str, Any], study: str, study_dir: Path,
                  say: Callable[[str], None]) -> Tracking:
    """The trackers a spec's ``tracking:`` section asks for, connected; one that cannot
    connect is left out after a warning."""
    backends: list[_Backend] = []
    guard = Tracking([], say)
    makers: list[tuple[str, Callable[[], _Backend]]] = []
    mlflow = tracking.get("mlflow")
    if mlflow:
        uri = (mlflow.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI")
               or f"sqlite:///{study_dir.resolve() / 'mlflow.db'}")
        makers.append(("MLflow", lambda: _MLflow(uri, mlflow.get("experiment") or study,
                                                 study_dir / "mlflow-artifacts")))
    if tracking.get("tensorboard"):
        makers.append(("TensorBoard", lambda: _TensorBoard(study_dir / "tensorboard" / study)))
    for name, make in makers:
        try:
            backends.append(make())
        except Exception as err:
            guard.say(f"warning: {name} tracking is off: {str(err).splitlines()[0]}")
    return Tracking(backends, say)
