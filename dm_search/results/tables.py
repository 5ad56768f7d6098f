"""A study as rows of plain values: its set-up and provenance, one row per trial, one per
family. The report draws them as HTML tables and the dashboard's note as Markdown; both read
the same rows, so the two never disagree."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any, NamedTuple

from dm_search import storage as st
from dm_search.common.labels import duration, final_labels, fmt
from dm_search.results.query import (
    best_per_family,
    coordinates,
    edf_of,
    finished_trials,
    is_finite,
    trial_label,
)

__all__ = ["FamilyRow", "FinalRow", "TrialRow", "family_rows", "final_rows", "generated",
           "noise_text", "pct", "setup", "trial_rows", "wall_times"]


def pct(v: Any, digits: int = 2) -> str:
    """A fraction as a percentage, "-" where there is none."""
    return f"{100 * v:.{digits}f}%" if is_finite(v) else "-"


def noise_text(study: Any) -> str:
    """The label noise as the spec asked for it and as measured on the training split."""
    spec = st.study_spec(study)
    noise = ((spec.get("base") or {}).get("data") or {}).get("noise") or {}
    kind = noise.get("kind", "no")
    text = (f"{kind} noise at {100 * float(noise['rate']):.0f}% (nominal)"
            if noise.get("rate") is not None else f"{kind} noise")
    measured = study.user_attrs.get(st.StudyKey.NOISE_RATE)
    if is_finite(measured):
        text += f", {100 * measured:.1f}% measured on the training split"
    return text


def _duration(study: Any, t: Any) -> float | None:
    """A trial's wall time: from the sampler's suggestion to its last report."""
    if t.datetime_start is not None and t.datetime_complete is not None:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    spent = [float(h["epoch_s"]) for h in st.trial_history(study, t)
             if is_finite(h.get("epoch_s"))]
    return sum(spent) if spent else None


def wall_times(study: Any) -> dict[str, float | None]:
    """The study's wall time (first trial's start to last trial's end), its trials' total,
    and the median of the full-budget and of the early-stopped trials."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    each = [d for d in (_duration(study, t) for t in trials) if d is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    span = ((max(ends) - min(t.datetime_start for t in trials)).total_seconds()
            if ends else None)

    def median(reason: str) -> float | None:
        got = [d for t in trials if st.stop_reason(t) == reason
               and (d := _duration(study, t)) is not None]
        return statistics.median(got) if got else None

    return {"study": span, "trials_total": sum(each) if each else None,
            "full_median": median(st.FINISHED), "early_median": median(st.EARLY)}


def _nodes(study: Any) -> list[str]:
    """Each machine the trials ran on, once: address, host, CPU, cores, GPU."""
    seen: dict[str, str] = {}
    for t in study.get_trials(deepcopy=False):
        node = st.trial_node(t)
        if not node:
            continue
        parts = [str(node.get("ip"))]
        if node.get("host"):
            parts.append(str(node["host"]))
        if node.get("cpu"):
            parts.append(f"{node['cpu']} ({node.get('cores', '?')} cores)")
        if node.get("gpu"):
            parts.append(str(node["gpu"]))
        seen.setdefault(str(node.get("ip")), ", ".join(parts))
    return list(seen.values())


def setup(study: Any) -> list[tuple[str, str]]:
    """The study's set-up and provenance as (name, text) pairs, every number with its unit."""
    spec = st.study_spec(study)
    base = spec.get("base") or {}
    data, optim = base.get("data") or {}, base.get("optim") or {}
    sched = spec.get("scheduler") or {}
    sampler = spec.get("sampler") or {}
    families = ", ".join((spec.get("space") or {}).get("families") or {}) or "-"
    refs = ", ".join(spec.get("baselines") or []) or "none"
    times = wall_times(study)
    trainer = base.get("trainer")
    rows = [
        ("data", f"{data.get('name', '?')}, {noise_text(study)}; "
                 f"{pct(data.get('val_fraction'), 0)} of the training set held out, with "
                 "clean labels, for validation; dataset fingerprint "
                 f"{study.user_attrs.get(st.StudyKey.FINGERPRINT) or '-'}" if base.get("data")
         else "the training loop's own"),
        ("model", str((base.get("model") or {}).get("name", "?")) + (
            " where the training loop builds it with trial.model(); else the loop's own"
            if trainer else "")),
        ("training loop", f"{trainer} (the user's own)" if trainer else "built-in"),
        ("budget", f"{fmt(optim.get('epochs'), 'd')} epochs per trial, "
                   f"{fmt(spec.get('n_trials'), 'd')} searched trials, "
                   f"{fmt(spec.get('max_concurrent'), 'd')} at a time"),
        ("search", f"families {families}; sampler {sampler.get('name', '?')}"
                   f"{' (seed ' + str(sampler['seed']) + ')' if 'seed' in sampler else ''}; "
                   f"early stopping {sched.get('name', '?')}; reference baselines {refs}"),
        ("recipe", _recipe(base)),
        ("wall time", f"{duration(times['study'])} for the study; a full-budget trial "
                      f"{duration(times['full_median'])}, an early-stopped one "
                      f"{duration(times['early_median'])} (medians); "
                      f"{duration(times['trials_total'])} of trials in all"),
    ]
    nodes = _nodes(study)
    if nodes:
        rows.append(("trials ran on", "; ".join(nodes)))
    runs = st.study_runs(study)
    if runs:
        last = runs[-1]
        drv = last.get("driver") or {}
        rows.append(("driver", f"{drv.get('host', '?')}, {drv.get('cpu', '?')} "
                               f"({drv.get('cores', '?')} cores, "
                               f"{fmt(drv.get('memory_gb'), '.0f')} GB of memory)"))
        rows.append(("software", ", ".join(f"{k} {v}" for k, v in
                                           (last.get("versions") or {}).items())))
        commits = list(dict.fromkeys(r.get("commit") or "not a git checkout" for r in runs))
        rows.append(("git commit", ", then ".join(commits)))
        if len(runs) > 1:
            rows.append(("submitted", ", then resumed ".join(
                dict.fromkeys(r.get("started", "?") for r in runs))))
    else:
        rows.append(("software", f"dm-search {study.user_attrs.get(st.StudyKey.VERSION, '?')}"))
    rows.append(("created", str(study.user_attrs.get(st.StudyKey.CREATED, "-"))))
    return rows


def _recipe(base: dict[str, Any]) -> str:
    """The training recipe every trial used, in a line."""
    o = base.get("optim") or {}
    parts = [f"{o.get('optimizer', 'sgd')} lr {fmt(o.get('lr'), 'g')}"]
    for key, name in (("momentum", "momentum"), ("weight_decay", "weight decay"),
                      ("batch_size", "batch")):
        if o.get(key) is not None:
            parts.append(f"{name} {fmt(o[key], 'g')}")
    if o.get("nesterov"):
        parts.append("nesterov")
    sched = o.get("schedule")
    if sched:
        parts.append(f"{sched} lr schedule")
    if o.get("warmup_epochs"):
        parts.append(f"{fmt(o['warmup_epochs'], 'g')} warm-up epochs")
    loss = base.get("loss") or {}
    if loss.get("normalise"):
        parts.append(f"weight normalisation: {loss['normalise']}")
    return ", ".join(parts)


class TrialRow(NamedTuple):
    number: int
    family: str
    edf: str  # the EDF or its schedule, in a few words
    coords: str  # where it puts its emphasis
    val: float | None  # clean validation accuracy: its last epoch's
    test: float | None
    memorised: float | None  # the fraction of the corrupted labels it fitted
    epochs: str  # "10/30"
    stop: str
    wall_s: float | None
    reference: bool


def trial_rows(study: Any) -> list[TrialRow]:
    """Every trial that trained, full-budget ones first, each by validation accuracy."""
    rows = []
    for t in finished_trials(study):
        last = st.trial_final(t)
        done, total = st.trial_epochs(t)
        rows.append(TrialRow(t.number, edf_of(t).family, trial_label(t),
                             coordinates(edf_of(t)), last.get("val_acc"),
                             last.get("test_acc"), last.get("memorised"),
                             f"{fmt(done, 'd')}/{fmt(total, 'd')}", st.stop_reason(t),
                             _duration(study, t), st.is_reference(t)))
    return sorted(rows, key=lambda r: (r.stop != st.FINISHED,
                                       -(r.val if r.val is not None and is_finite(r.val)
                                         else -1.0), r.number))


class FamilyRow(NamedTuple):
    family: str
    trials: int
    full: int  # ran their whole budget
    early: int
    failed: int
    best_val: float | None
    median_val: float | None  # over its full-budget trials
    best_test: float | None  # the best trial's
    best_memorised: float | None
    best: str  # the best trial: number and coordinates


def family_rows(study: Any) -> list[FamilyRow]:
    """One row per searched family, best first."""
    by: dict[str, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        edf = st.trial_edf(t)
        if edf and not st.is_reference(t):
            by.setdefault(edf["family"], []).append(t)
    bests = {edf_of(t).family: t for t in best_per_family(study)}
    rows = []
    for fam, trials in by.items():
        full = [t for t in trials if st.is_eligible(t)]
        best = bests.get(fam)
        last = st.trial_final(best) if best is not None else {}
        reasons = [st.stop_reason(t) for t in trials]
        rows.append(FamilyRow(
            fam, len(trials), len(full), reasons.count(st.EARLY),
            sum(r.startswith("failed") and r != st.INTERRUPTED for r in reasons),
            best.value if best is not None else None,
            statistics.median(t.value for t in full) if full else None,
            last.get("test_acc"), last.get("memorised"),
            f"trial {best.number}: {coordinates(edf_of(best))}" if best is not None else "-"))
    return sorted(rows, key=lambda r: -(r.best_val if r.best_val is not None else -1.0))


class FinalRow(NamedTuple):
    label: str
    test_mean: float
    test_std: float  # over the seeds
    memorised: float | None  # mean over the seeds
    seeds: int
    epochs: str


def final_rows(study: Any) -> list[FinalRow]:
    """The final stage: the best EDF and CE retrained on the full training set (empty
    without a final stage)."""
    final = st.final_stage(study)
    if not final:
        return []
    rows = []
    for key, label in final_labels(final).items():
        r = final[key]
        mem = [x["memorised"] for x in r["runs"] if is_finite(x.get("memorised"))]
        epochs = sorted({x["epochs"] for x in r["runs"] if x.get("epochs") is not None})
        rows.append(FinalRow(label, r["test_acc_mean"], r["test_acc_std"],
                             sum(mem) / len(mem) if mem else None, len(r["runs"]),
                             ", ".join(map(str, epochs)) or "-"))
    return rows


class RaceRow(NamedTuple):
    trial: int
    label: str
    runs: list[float | None]  # each run's score: the search run first, then each new seed
    mean: float
    std: float
    spread: float  # points
    verdict: str  # "winner", "out", or ""
    unstable: bool


def race_rows(study: Any) -> tuple[list[RaceRow], dict[str, Any]]:
    """The race: a row per candidate with its runs' scores, and the race record (empty
    lists and dict for a study that never raced)."""
    record = st.race(study) or {}
    rows = []
    for c in record.get("candidates") or []:
        runs = [c["search_score"], *[r.get("score") for r in c.get("runs") or []]]
        verdict = ("winner" if c["trial"] == record.get("winner") else
                   "out" if c.get("out") else "")
        rows.append(RaceRow(c["trial"], c["label"], runs, c["mean"], c["std"], c["spread"],
                            verdict, bool(c.get("unstable"))))
    return rows, record


def generated() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
