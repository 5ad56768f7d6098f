"""Which trials count and how they rank: the stop reason, the full-budget trials, the score
over the last epochs, the best trial (the race's winner where a race ran) and the summary."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from dm_search.storage.epochs import engine_of, recent_mean_val_acc, study_val_curves
from dm_search.storage.keys import _BLOB, FINISHED, INTERRUPTED, TrialKey
from dm_search.storage.loading import Subset, load_trials
from dm_search.storage.read import (
    driver_state,
    final_stage,
    has_config,
    is_reference,
    race,
    study_provenance,
    study_spec,
    trial_config,
    trial_edf,
    trial_final,
    trial_node,
    trial_schedule,
)
from dm_search.storage.write import config_key

__all__ = ["best_trial", "counted_trials", "epochs_trained", "is_eligible", "past_curves",
           "race_epochs", "ran_full_budget", "ranked_trials", "score_window",
           "search_epochs", "stop_reason", "study_summary", "summary_trials", "trial_score",
           "trial_scores", "trial_summary"]


def counted_trials(study: optuna.Study) -> int:
    """Searched trials that used up budget: everything finished except interrupted ones and
    the references (which n_trials does not count)."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state.is_finished() and t.user_attrs.get(TrialKey.STOP) != INTERRUPTED
               and not is_reference(t))


def epochs_trained(study: optuna.Study) -> int:
    """Epochs the study has trained, references and races included: what budget_epochs
    counts."""
    return search_epochs(study) + race_epochs(race(study))


def search_epochs(study: optuna.Study) -> int:
    """Epochs the study's trials have trained, references included (races not)."""
    return sum(int(t.user_attrs.get(TrialKey.EPOCHS) or 0)
               for t in study.get_trials(deepcopy=False))


def race_epochs(record: dict[str, Any] | None) -> int:
    """Epochs the races' runs trained, those of candidates an earlier race had included."""
    record = record or {}
    return sum(int(r.get("epochs") or 0)
               for c in [*(record.get("candidates") or []), *(record.get("earlier") or [])]
               for r in c.get("runs") or [])


def past_curves(study: optuna.Study) -> list[list[float]]:
    """Validation accuracy per epoch of the searched trials already in the study, in order."""
    trials = [t for t in study.get_trials(deepcopy=False) if not is_reference(t)]
    curves = study_val_curves(study, trials)
    return [curves[t._trial_id] for t in trials if curves[t._trial_id]]


# ------------------------------------------------------------------ reading results
def stop_reason(t: FrozenTrial) -> str:
    if t.state == TrialState.RUNNING:
        return "running"
    if t.state == TrialState.WAITING:
        return "waiting"
    reason = t.user_attrs.get(TrialKey.STOP)
    full = t.system_attrs.get(_BLOB + TrialKey.STOP)
    if reason and full and str(reason).endswith("\u2026") and full.startswith(reason[:-1]):
        return str(full)  # the row shows it cut short (record_failure)
    if reason:
        return str(reason)
    return "failed" if t.state == TrialState.FAIL else t.state.name.lower()


def ran_full_budget(t: FrozenTrial) -> bool:
    """Finished with a value after its whole budget: an early-stopped trial's value is an
    early epoch's, not comparable with finished trials'."""
    return (t.state == TrialState.COMPLETE and t.user_attrs.get(TrialKey.STOP) == FINISHED
            and t.value is not None and math.isfinite(t.value))


def is_eligible(t: FrozenTrial) -> bool:
    """Only searched trials that ran their full budget can be 'best'; references are what the
    best is compared with."""
    return ran_full_budget(t) and not is_reference(t)


def score_window(study: optuna.Study) -> int:
    """Epochs whose validation accuracy make a run's score (1, the last epoch alone, for a
    study recorded before scores were averaged)."""
    return int((study_spec(study).get("race") or {}).get("window") or 1)


def trial_score(study: optuna.Study, t: FrozenTrial, window: int) -> float:
    """A full-budget trial's score: the mean of its last ``window`` epochs' validation
    accuracy (its value where no history is recorded)."""
    return trial_scores(study, [t], window)[t._trial_id]


def trial_scores(study: optuna.Study, trials: list[FrozenTrial], window: int
                 ) -> dict[int, float]:
    """Each trial's score (see trial_score) by trial id, read for all of them at once."""
    def value(t: FrozenTrial) -> float:
        return float(t.value) if t.value is not None else math.nan

    if window <= 1:
        return {t._trial_id: value(t) for t in trials}
    means = recent_mean_val_acc(study, trials, window)
    return {t._trial_id: value(t) if math.isnan(means[t._trial_id]) else means[t._trial_id]
            for t in trials}


def _by_score(study: optuna.Study, trials: list[FrozenTrial], window: int
              ) -> list[FrozenTrial]:
    """The eligible ones of ``trials``, best score first (ties: the earlier trial)."""
    eligible = [t for t in trials if is_eligible(t)]
    score = trial_scores(study, eligible, window)
    return sorted(eligible, key=lambda t: (-score[t._trial_id], t.number))


def ranked_trials(study: optuna.Study, window: int | None = None, limit: int | None = None
                  ) -> list[FrozenTrial]:
    """Eligible trials, best score first, one per distinct configuration; the first
    ``limit`` of them (all by default)."""
    window = score_window(study) if window is None else window
    out: list[FrozenTrial] = []
    seen = set()
    for t in _by_score(study, study.get_trials(deepcopy=False), window):
        if limit is not None and len(out) >= limit:
            break  # a config's key costs a JSON dump: 10,000 of them took 1.5 s
        key = config_key(trial_config(t)) if has_config(t) else str(t.number)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def best_trial(study: optuna.Study, trials: list[FrozenTrial] | None = None
               ) -> FrozenTrial | None:
    """The study's winner: the race's where a race decided one, else the best score of a
    single full-budget run. ``trials``: the study's trials where the caller has them (its
    summary's need only their state, value and stop reason)."""
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    record = race(study) or {}
    if record.get("winner") is not None:
        for t in trials:
            if t.number == record["winner"] and is_eligible(t):
                return t
    ranked = _by_score(study, trials, score_window(study))
    return ranked[0] if ranked else None


def trial_summary(t: FrozenTrial) -> dict[str, Any]:
    edf = trial_edf(t) or {}
    final = trial_final(t)
    return {
        "number": t.number,
        "state": t.state.name,
        "stop_reason": stop_reason(t),
        "value": t.value,
        "edf": edf,
        "schedule": trial_schedule(t),
        "mode": t.user_attrs.get(TrialKey.MODE),
        "spread": t.user_attrs.get(TrialKey.SPREAD),
        "mean": t.user_attrs.get(TrialKey.MEAN),
        "std": t.user_attrs.get(TrialKey.STD),
        "reference": is_reference(t),
        "epochs": t.user_attrs.get(TrialKey.EPOCHS),
        "total_epochs": t.user_attrs.get(TrialKey.TOTAL),
        "node": trial_node(t) or None,
        "test_acc": final.get("test_acc"),
        "memorised": final.get("memorised"),
    }


# What a summary reads of every trial besides its state and value: the attributes of its
# stop reason, role, family and epochs (an older study's history among them). The best trial
# and the references are then read whole: a study's configs are most of its bytes, and
# decoding them all was most of a summary's time.
_SUMMARY = Subset(
    user=frozenset({TrialKey.STOP, TrialKey.REFERENCE, TrialKey.EPOCHS, TrialKey.EDF,
                    TrialKey.HISTORY}),
    system=frozenset(_BLOB + k for k in (TrialKey.STOP, TrialKey.EDF, TrialKey.HISTORY)),
    params=False, intermediate=False, dates=False)


def summary_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of the study with only what its summary reads (see _SUMMARY)."""
    engine = engine_of(study)
    if engine is None:  # a storage without a database (Optuna's in-memory one)
        return study.get_trials(deepcopy=False)
    return load_trials(engine, study._study_id, None, set(), -1, subset=_SUMMARY)


def _whole(study: optuna.Study, t: FrozenTrial) -> FrozenTrial:
    return study._storage.get_trial(t._trial_id)


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Progress, best eligible trial and per-family breakdown, from the database only."""
    trials = summary_trials(study)
    reasons: Counter[str] = Counter()
    failures: Counter[str] = Counter()  # why trials failed (interrupted ones are not failures)
    families: dict[str, dict[str, Any]] = {}
    searched = 0
    for t in trials:
        r = stop_reason(t)
        if r.startswith("failed") and r != INTERRUPTED:
            failures[r.removeprefix("failed: ").split(":")[0] or "failed"] += 1
        reasons["interrupted" if r == INTERRUPTED else "failed" if r.startswith("failed") else
                "duplicate" if r.startswith("duplicate") else r] += 1
        if is_reference(t):
            continue
        # Searched trials that ran or run: queued points and interrupted runs (which run
        # again on resume) are not counted against n_trials.
        searched += (t.state != TrialState.WAITING
                     and t.user_attrs.get(TrialKey.STOP) != INTERRUPTED)
        fam = (trial_edf(t) or {}).get("family")
        if fam is None:
            continue
        f = families.setdefault(fam, {"trials": 0, "finished": 0, "best_val_acc": None})
        f["trials"] += 1
        if is_eligible(t):
            f["finished"] += 1
            if f["best_val_acc"] is None or t.value > f["best_val_acc"]:
                f["best_val_acc"] = t.value
    best = best_trial(study, trials)
    spec = study_spec(study)
    return {
        "name": study.study_name,
        "n_trials": spec.get("n_trials"),
        "trials": len(trials),
        "searched": searched,
        "by_reason": dict(reasons),
        "best": trial_summary(_whole(study, best)) if best else None,
        "references": [trial_summary(_whole(study, t)) for t in trials if is_reference(t)],
        "failures": dict(failures),
        "families": families,
        "race": race(study),
        "final_stage": final_stage(study),
        "driver": driver_state(study),
        **{k: v for k, v in study_provenance(study).items() if k != "noise_rate"},
    }
