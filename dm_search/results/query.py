"""Queries over a study's trials that the figures, tables and report share: the finished
and eligible trials, each trial's EDF and schedule, labels and coordinates, the best per
family, the references."""

from __future__ import annotations

from typing import Any

from dm_search import storage as st
from dm_search.common.labels import loss_label
from dm_search.edf import EDF, EDFSchedule

__all__ = ["best_per_family", "coordinates", "edf_of", "eligible_by_family", "finished_trials",
           "is_finite", "reference_values", "schedule_of", "schedule_path", "searched_by_family",
           "top_trials", "trial_label", "trial_value"]


def finished_trials(study: Any) -> list[Any]:
    return [t for t in study.get_trials(deepcopy=False)
            if st.trial_edf(t) and t.state.is_finished()]


def edf_of(t: Any) -> EDF:
    return EDF.from_config(st.trial_edf(t) or {})


def schedule_of(t: Any) -> EDFSchedule | None:
    """The trial's emphasis schedule; None for a fixed EDF."""
    sched = st.trial_schedule(t)
    if sched is None:
        return None
    return EDFSchedule.from_config({"edf": st.trial_edf(t), **sched})


def trial_label(t: Any) -> str:
    """The trial's EDF, or its schedule, in a few words."""
    sched = st.trial_schedule(t)
    return loss_label({"edf": st.trial_edf(t) or {}, **(sched or {})})


def schedule_path(sched: EDFSchedule | None, coords: str) -> list[tuple[float, float]]:
    out = []
    for e in sched.path() if sched is not None else []:
        x, y = (e.mean, e.std) if coords == "moments" else (e.mode, e.spread)
        if x is not None and y is not None:
            out.append((float(x), float(y)))
    return out


def is_finite(v: Any) -> bool:
    return isinstance(v, int | float) and v == v and abs(v) != float("inf")


def trial_value(t: Any) -> float | None:
    """The trial's validation accuracy; for an early-stopped (PRUNED) trial, the one at the
    epoch where it stopped."""
    if is_finite(t.value):
        return float(t.value)
    if st.stop_reason(t) != st.EARLY:
        return None
    last = st.trial_final(t).get("val_acc")
    return float(last) if last is not None and is_finite(last) else None


def reference_values(study: Any) -> list[tuple[str, float]]:
    return [(f"{edf_of(t)} (reference)", float(t.value)) for t in finished_trials(study)
            if st.is_reference(t) and st.ran_full_budget(t)]


def top_trials(study: Any, k: int = 3) -> list[Any]:
    eligible = [t for t in finished_trials(study) if st.is_eligible(t)]
    return sorted(eligible, key=lambda t: (-t.value, t.number))[:k]


def coordinates(edf: EDF) -> str:
    """Where an EDF puts its emphasis, in words: its mode and spread, or the mean and std of
    its emphasis density for the families without a mode."""
    moments = f"mean {edf.mean:.2f}, std {edf.std:.2f}"
    if edf.mode is not None and edf.spread is not None:
        return f"mode {edf.mode:.2f}, spread {edf.spread:.3g}; {moments}"
    return f"mode {edf.mode:.2f}; {moments}" if edf.mode is not None else moments


def eligible_by_family(study: Any) -> dict[str, list[Any]]:
    """Each family's searched trials that ran their full budget."""
    out: dict[str, list[Any]] = {}
    for t in finished_trials(study):
        if st.is_eligible(t):
            out.setdefault(edf_of(t).family, []).append(t)
    return out


def best_per_family(study: Any) -> list[Any]:
    """Each searched family's best full-budget trial, best first: one curve per family, never
    two near-duplicates of one (GCE with q 0.70 and 0.71)."""
    best = [max(ts, key=lambda t: (t.value, -t.number))
            for ts in eligible_by_family(study).values()]
    return sorted(best, key=lambda t: (-t.value, t.number))


def searched_by_family(study: Any) -> dict[str, list[Any]]:
    """Each family's full-budget trials with sampled parameters."""
    by = {fam: [t for t in ts if t.params] for fam, ts in eligible_by_family(study).items()}
    return {fam: ts for fam, ts in by.items() if ts}
