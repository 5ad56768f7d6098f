"""TPE with a bounded history: exactly TPE's suggestions in a study within the bound, and in a
larger one TPE's good group kept whole while its bad group comes from the recent trials."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.samplers._tpe.sampler import _split_trials, default_gamma
from optuna.trial import TrialState

from dm_search.study.sampling import BoundedHistory, dropped_trials
from dm_search.study.space import make_sampler
from dm_search.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    family = trial.suggest_categorical("family", ["a", "b"])
    x = trial.suggest_float(f"{family}.x", -3.0, 3.0)
    return -(x - (1.0 if family == "a" else -0.5)) ** 2


def _tpe(seed: int = 3) -> optuna.samplers.TPESampler:
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                      constant_liar=True, n_startup_trials=5)


def test_within_the_bound_it_suggests_exactly_what_tpe_suggests():
    plain = optuna.create_study(direction="maximize", sampler=_tpe())
    bounded = optuna.create_study(direction="maximize",
                                  sampler=BoundedHistory(_tpe(), recent=100, best=10))
    plain.optimize(_objective, n_trials=40)
    bounded.optimize(_objective, n_trials=40)
    assert [t.params for t in bounded.trials] == [t.params for t in plain.trials]


def _big_study(n: int = 400) -> optuna.Study:
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for i in range(n):
        trial = study.ask()
        value = _objective(trial)
        if i % 4 == 3:  # early-stopped at a step of its own
            trial.report(value, step=1 + i % 7)
            study.tell(trial, state=TrialState.PRUNED)
        elif i % 50 == 17:
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
    return study


def test_beyond_the_bound_tpe_sees_the_best_and_the_recent_trials_and_its_good_group_whole():
    study = _big_study()
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    dropped = dropped_trials(finished, study.direction, recent=250, best=30)
    kept = [t for t in finished if t._trial_id not in dropped]
    complete = sorted((t for t in finished if t.state == TrialState.COMPLETE),
                      key=lambda t: -t.value)
    pruned = sorted((t for t in finished if t.state == TrialState.PRUNED),
                    key=lambda t: (-max(t.intermediate_values),
                                   -t.intermediate_values[max(t.intermediate_values)]))
    assert len(kept) < len(finished) - 80
    assert {t.number for t in kept} == ({t.number for t in finished[-250:]}
                                        | {t.number for t in complete[:30]}
                                        | {t.number for t in pruned[:30]})
    assert dropped_trials(finished, study.direction, recent=len(finished)) == set()

    sampler = BoundedHistory(_tpe(), recent=250, best=30)
    study.sampler = sampler
    running = study.ask()
    study.ask()  # another trial running: the constant liar's
    trial = optuna.trial.FrozenTrial(
        number=running.number, state=TrialState.RUNNING, value=None, values=None,
        datetime_start=None, datetime_complete=None, params={}, distributions={},
        user_attrs={}, system_attrs={}, intermediate_values={}, trial_id=running._trial_id)
    view = sampler._seen(study, trial)
    shown = view._get_trials(deepcopy=False, states=None)
    assert [t.number for t in shown] == sorted([t.number for t in kept] + [400, 401]
                                               + [t.number for t in study.trials
                                                  if t.state == TrialState.FAIL])
    # TPE's good group is the whole study's: the same trials, split from fewer (its size
    # is capped at 25 from 250 trials on, which is why a history is at least that long).
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    n_below = default_gamma(len(finished))
    assert n_below == default_gamma(len(kept)) == 25
    whole = _split_trials(study, study._get_trials(deepcopy=False, states=states), n_below)[0]
    seen = _split_trials(view, view._get_trials(deepcopy=False, states=states), n_below)[0]
    assert [t.number for t in seen] == [t.number for t in whole]
    # and it samples from them
    assert sampler.sample_relative(study, trial,
                                   sampler.infer_relative_search_space(study, trial))


def test_the_specs_tpe_is_bounded_pickles_without_its_study_and_takes_a_history():
    spec = StudySpec.model_validate({"name": "s", "base": {"data": {"name": "mnist1d"}},
                                     "sampler": {"name": "tpe", "history": 300}})
    sampler = make_sampler(spec)
    assert isinstance(sampler, BoundedHistory) and sampler.recent == 300
    assert isinstance(sampler.inner, optuna.samplers.TPESampler)
    study = _big_study(30)
    study.sampler = sampler
    study.optimize(_objective, n_trials=2)
    _objective(study.ask())  # a trial being sampled: the sampler holds the study's view
    assert sampler._view is not None
    again = pickle.loads(pickle.dumps(sampler))  # Tune pickles its searcher with the sampler
    assert again._view is None and again.recent == 300
    default = make_sampler(StudySpec.model_validate({"name": "s",
                                                     "base": {"data": {"name": "mnist1d"}}}))
    assert default.recent == 1000
    with pytest.raises(ValueError, match="takes no history"):
        StudySpec.model_validate({"name": "s", "base": {"data": {"name": "mnist1d"}},
                                  "sampler": {"name": "random", "history": 300}})
