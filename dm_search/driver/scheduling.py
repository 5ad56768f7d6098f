"""The study's rules as Ray Tune plug-ins: the early-stopping rule as a Tune scheduler, and
the searcher wrapper that runs the references, skips duplicates, keeps to the budget and the
family shares, and tells Optuna each trial's result."""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from dm_search import storage as st
from dm_search.driver.recorder import as_number
from dm_search.driver.rendering import render_done
from dm_search.driver.signals import StopRequest
from dm_search.driver.worker import METRIC
from dm_search.study.space import family_due, trial_config_for
from dm_search.study.spec import StudySpec
from dm_search.study.stopping import MedianRule, NoStopping, RungRule, StoppingRule

__all__ = ["RuleScheduler", "StudySearcher"]


class RuleScheduler(FIFOScheduler):
    """A :mod:`dm_search.study.stopping` rule as a Tune scheduler. The rule is built at the first
    result, when the trials' budget in epochs is known (an iteration budget gives it only
    then), and is first shown the curves of the trials already in the study, so that a
    resumed study's rungs keep their bars. Reference trials are never stopped and never set a
    bar for the others."""

    def __init__(self, spec: StudySpec, past: list[list[float]] | None = None) -> None:
        super().__init__()
        self.spec = spec.scheduler
        self.past = past or []
        self.rule: StoppingRule | None = None

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True

    def _make(self, budget: int) -> StoppingRule:
        s = self.spec
        grace = s.grace_epochs(budget)
        if s.name == "rung":
            return RungRule(budget, grace, s.reduction_factor, min_trials=s.min_trials,
                            trend=s.trend, window=s.trend_window)
        if s.name == "asha":
            return RungRule(budget, grace, s.reduction_factor)
        if s.name == "median":
            return MedianRule(grace)
        return NoStopping()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if trial.config.get("reference") or "error" in result or METRIC not in result:
            return TrialScheduler.CONTINUE
        if self.rule is None:
            self.rule = self._make(int(result.get("total_epochs") or 1))
            for k, curve in enumerate(self.past):
                for epoch, v in enumerate(curve, 1):
                    self.rule.on_result(f"past-{k}", epoch, v)
                self.rule.forget(f"past-{k}")
        value = as_number(result[METRIC])
        go_on = self.rule.on_result(trial.trial_id, int(result["epoch"]), value)
        return TrialScheduler.CONTINUE if go_on else TrialScheduler.STOP

    def _forget(self, trial: Any) -> None:
        if self.rule is not None:
            self.rule.forget(trial.trial_id)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._forget(trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial)


class StudySearcher(Searcher):
    """Wraps the Optuna searcher with what a study adds to it: the reference baselines run
    first, once each (a resumed study skips the ones on record), and with ``budget_epochs``
    a trial starts only while the epochs trained, those the running trials may still need and
    its own full length fit in the budget."""

    def __init__(self, inner: Searcher, spec: StudySpec, study: optuna.Study,
                 stop: StopRequest | None = None, writer: st.EpochWriter | None = None) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.inner = inner
        self.writer = writer
        self.stop = stop or StopRequest()
        self.spec = spec
        self.study = study
        self.pending = st.missing_references(study, spec)
        self.references: dict[str, int] = {}  # Ray trial id -> Optuna trial number
        self.numbers: dict[str, int | None] = {}  # the same, for searched trials
        self.budget = spec.search_budget()  # the races' reserve is not the search's
        self.used = st.search_epochs(study)
        self.progress: dict[str, tuple[int, int]] = {}  # running: (epochs done, total)
        # Epochs of one full trial; an iteration budget knows it only at the first result.
        self.per_trial = spec.total_epochs() or 1

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher with the experiment state; the writer's thread cannot
        # travel (and a study resumes from the database, not from Tune's state).
        return {**self.__dict__, "writer": None}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict,
                              **spec: Any) -> bool:
        return bool(self.inner.set_search_properties(metric, mode, config, **spec))

    def _committed(self) -> int:
        return sum(total - done if total else self.per_trial
                   for done, total in self.progress.values())

    def suggest(self, trial_id: str) -> dict | None:
        if self.budget is not None:
            # A trial starts only if the budget holds it at full length on top of what the
            # running trials may still need; the study never trains more than its budget.
            if self.used + self.per_trial > self.budget:
                return Searcher.FINISHED  # type: ignore[return-value]  # Ray's own sentinel
            if self.used + self._committed() + self.per_trial > self.budget:
                return None  # wait: a running trial may be stopped early and free budget
        if self.pending:
            edf = self.pending.pop(0)
            cfg = trial_config_for(self.spec, edf).to_dict()
            number = st.new_reference_trial(self.study, cfg).number
            self.references[trial_id] = number
            self.progress[trial_id] = (0, 0)
            return {"trial_config": cfg, "optuna_trial": number, "reference": True}
        due = family_due(self.spec, self.study)
        if due is not None:
            # The sampler still picks the point; only the family is set for it.
            self.study.enqueue_trial({"family": due}, skip_if_exists=False)
        out = self.inner.suggest(trial_id)
        if isinstance(out, dict):
            self.progress[trial_id] = (0, 0)
            self.numbers[trial_id] = out.get("optuna_trial")
        return out

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if "epoch" in result and "error" not in result:
            done = int(result["epoch"])
            before = self.progress.get(trial_id, (0, 0))[0]
            # A retried trial starts over at epoch 1: its new epochs count again.
            self.used += done - before if done > before else done
            self.progress[trial_id] = (done, int(result.get("total_epochs") or 0))
        # The inner searcher's only use of a result is Optuna's intermediate value, which the
        # recorder's epoch writer records with the rest of the epoch (one transaction a batch
        # instead of one commit a report).
        if self.writer is None and trial_id not in self.references:
            self.inner.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        done, total = self.progress.pop(trial_id, (0, 0))
        number = self.numbers.pop(trial_id, None)
        if self.writer is not None:
            self.writer.flush()  # its epochs before its end: Optuna refuses updates after it
        if self.stop.signum is not None and not (total and done >= total):
            # Cut short by Ctrl-C or SIGTERM: its partial value is no result. It stays
            # running in the database until the driver records it as interrupted.
            self.references.pop(trial_id, None)
            return
        if trial_id in self.references:
            value = None if error or not result else result.get(METRIC)
            render_done(self.references[trial_id])
            st.finish_reference_trial(self.study, self.references.pop(trial_id), value)
        else:
            render_done(number)  # attached while the trial still runs in Optuna's eyes
            self.inner.on_trial_complete(trial_id, result=result, error=error)
