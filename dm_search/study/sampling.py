"""TPE with a bounded history: the cost of a suggestion stays flat as a study grows.

Optuna's TPE walks every trial of the study for every suggestion (its search-space
decomposition, its split of the trials into a good and a bad group, a density per
parameter), so a suggestion's cost grows with the study: about 0.3 s at 10,000 trials on this
project's reference machine, paid once per trial the driver starts. TPE's good group is small
(the best 10% of the trials, at most 25 by default), and its bad group already weighs older
trials less. ``BoundedHistory`` therefore shows TPE, once a study holds more than
``recent + best`` finished trials, only:

- the ``best`` best complete and the ``best`` best pruned trials (by TPE's own order), so that
  its good group is the whole study's (exactly, while the good group is at most ``best``);
- the ``recent`` most recent finished trials, from which its bad group is estimated (at least
  250: TPE's good group is a tenth of the trials it sees, at most 25, so from 250 trials on
  its size is the whole study's too);
- every running and waiting trial (the constant liar's).

Below that size TPE sees every trial and suggests what it would alone.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BEST", "RECENT", "BoundedHistory"]

RECENT = 1000  # finished trials TPE's bad group is estimated from
BEST = 100  # best complete (and best pruned) trials always shown: TPE's good group is <= 25


class _View:
    """The study as TPE sees it while it samples one trial: the same study, less some
    finished trials, its trial lists read once. TPE reads them again for every group of
    parameters it samples (each read of the running trials a query of the database); while
    one trial is sampled the driver starts and ends no other, so one read serves them all."""

    def __init__(self, study: Study, dropped: set[int]) -> None:
        self._study = study
        self._dropped = dropped
        self._read: dict[tuple[Any, bool], list[FrozenTrial]] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy and pickle ask for these: the view has none
            raise AttributeError(name)
        return getattr(self.__dict__["_study"], name)

    def _get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        key: tuple[Any, bool] = (None if states is None else tuple(states), use_cache)
        if key not in self._read:
            trials = self._study._get_trials(deepcopy=False, states=states, use_cache=use_cache)
            self._read[key] = [t for t in trials if t._trial_id not in self._dropped]
        trials = self._read[key]
        return copy.deepcopy(trials) if deepcopy else list(trials)

    def get_trials(self, deepcopy: bool = True, states: Sequence[TrialState] | None = None
                   ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def _pruned_rank(t: FrozenTrial, sign: float) -> tuple[float, float, int]:
    # TPE ranks a pruned trial by its last step (later first), then that step's value.
    if not t.intermediate_values:
        return (1.0, 0.0, t.number)
    step = max(t.intermediate_values)
    return (-float(step), sign * float(t.intermediate_values[step]), t.number)


def dropped_trials(finished: Sequence[FrozenTrial], direction: StudyDirection, *,
                   recent: int = RECENT, best: int = BEST) -> set[int]:
    """The ids of the finished (complete and pruned) trials TPE is not shown, of
    ``finished`` in the order the study lists them (by number): none for a study of at most
    ``recent + best`` of them."""
    if len(finished) <= recent + best:
        return set()
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    # Tuples compare in C: a study of 10,000 trials is ranked in a few milliseconds.
    complete = [(sign * t.value, t.number, t._trial_id) for t in finished
                if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [(*_pruned_rank(t, sign), t._trial_id) for t in finished
              if t.state == TrialState.PRUNED]
    keep = {t._trial_id for t in finished[-recent:]}
    keep.update(row[-1] for row in heapq.nsmallest(best, complete))
    keep.update(row[-1] for row in heapq.nsmallest(best, pruned))
    return {t._trial_id for t in finished} - keep


class BoundedHistory(optuna.samplers.BaseSampler):
    """``inner`` (a TPESampler) shown a bounded history (see the module's docstring)."""

    def __init__(self, inner: optuna.samplers.BaseSampler, *, recent: int = RECENT,
                 best: int = BEST) -> None:
        self.inner = inner
        self.recent = recent
        self.best = best
        self._view: tuple[int, Any] | None = None  # (trial number, the study as shown)

    def _seen(self, study: Study, trial: FrozenTrial) -> Any:
        if self._view is None or self._view[0] != trial.number:
            finished = study._get_trials(deepcopy=False, use_cache=True,
                                         states=(TrialState.COMPLETE, TrialState.PRUNED))
            dropped = (set() if study._is_multi_objective() else
                       dropped_trials(finished, study.direction, recent=self.recent,
                                      best=self.best))
            self._view = (trial.number, _View(study, dropped))
        return self._view[1]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial
                                    ) -> dict[str, BaseDistribution]:
        return self.inner.infer_relative_search_space(self._seen(study, trial), trial)

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.inner.sample_relative(self._seen(study, trial), trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.inner.sample_independent(self._seen(study, trial), trial, param_name,
                                             param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.inner.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._view = None
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_view": None}  # Tune pickles its searcher, not the study
