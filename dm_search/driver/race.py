"""The races, driven: after the search, the top candidates are trained again with new seeds on
Ray (``worker.race_run``) and the study's winner is chosen on all their runs (the rules are in
:mod:`dm_search.study.racing`). Every run is written to the study as soon as it ends, so a study
stopped mid-race resumes with the runs it had."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import optuna
import ray

from dm_search import storage as st
from dm_search.common.labels import loss_label, race_lines
from dm_search.driver import worker
from dm_search.study import racing
from dm_search.study.spec import StudySpec

__all__ = ["run_race"]

# Race seeds start past the seeds a study's base config uses, so that no re-evaluation repeats
# the search's own run.
SEED_STEP = 1


def _candidate(study: optuna.Study, t: optuna.trial.FrozenTrial, window: int,
               old: dict[str, Any] | None) -> dict[str, Any]:
    cfg = st.trial_config(t)
    return {"trial": t.number, "label": loss_label(cfg["loss"]), "edf": cfg["loss"]["edf"],
            "search_score": round(st.trial_score(study, t, window), 6),
            "runs": list((old or {}).get("runs") or [])}


def _same_race(record: dict[str, Any], spec: StudySpec, trials: list[int]) -> bool:
    r = spec.race
    return (record.get("winner") is not None and record.get("rule") == r.rule
            and record.get("window") == r.window and record.get("seeds") == r.seeds
            and [c["trial"] for c in record.get("candidates") or []] == trials)


def _run_record(out: dict[str, Any], window: int) -> dict[str, Any]:
    score = 0.0 if out.get("failed") else racing.run_score(out["val_accs"], window)
    return {**{k: v for k, v in out.items() if k != "val_accs"},
            "val_acc": out["val_accs"][-1] if out["val_accs"] else None,
            "score": round(score, 6)}


def _record(study: optuna.Study, spec: StudySpec, cands: list[dict[str, Any]],
            alive: list[dict[str, Any]] | None = None, winner: int | None = None,
            earlier: list[dict[str, Any]] | None = None) -> None:
    r = spec.race
    alive_ids = {c["trial"] for c in alive} if alive is not None else None
    rows = []
    for row in racing.standings(cands, r.rule):
        runs = racing.scores(row)
        rows.append({k: row[k] for k in ("trial", "label", "edf", "search_score", "runs")}
                    | {"mean": round(row["mean"], 6), "std": round(row["std"], 6),
                       "spread": round(100 * row["spread"], 3), "n": row["n"],
                       "unstable": racing.unstable(runs),
                       "out": alive_ids is not None and row["trial"] not in alive_ids})
    rows.sort(key=lambda c: [x["trial"] for x in cands].index(c["trial"]))
    st.record_race(study, {"rule": r.rule, "window": r.window, "seeds": r.seeds,
                           "candidates": rows, "winner": winner,
                           "unstable_points": racing.UNSTABLE_POINTS,
                           # Candidates of an earlier race that new trials pushed out of the top:
                           # their runs were trained and still count against the budget.
                           "earlier": earlier or []})


def _budget_left(spec: StudySpec, study: optuna.Study) -> float:
    if spec.budget_epochs is None:
        return math.inf
    return spec.budget_epochs - st.epochs_trained(study)


def run_race(spec: StudySpec, study: optuna.Study, say: Callable[[str], None]) -> None:
    """Race the study's top candidates and record the winner (see the module docstring)."""
    r = spec.race
    top = st.ranked_trials(study, r.window, limit=r.candidates)
    if len(top) < 2:
        say("race skipped: fewer than 2 distinct configurations ran their full budget")
        return
    record = st.race(study) or {}
    if _same_race(record, spec, [t.number for t in top]):
        say(f"race already decided: trial {record['winner']}")
        return
    old = {c["trial"]: c for c in record.get("candidates") or []}
    cands = [_candidate(study, t, r.window, old.get(t.number)) for t in top]
    numbers = {t.number for t in top}
    earlier = [*(record.get("earlier") or []),
               *[c for n, c in old.items() if n not in numbers and c.get("runs")]]

    def write(alive: list[dict[str, Any]] | None = None, winner: int | None = None) -> None:
        _record(study, spec, cands, alive, winner, earlier)

    cfgs = {t.number: st.trial_config(t) for t in top}
    rule = "mean" if r.rule == "mean" else "lower bound (mean less a standard error)"
    say(f"race: trials {', '.join(str(c['trial']) for c in cands)} again with up to {r.seeds} "
        f"new seed(s) each, on the search's split; a run scores its last {r.window} epochs' "
        f"mean val_acc, and the winner has the best {rule} over its runs")
    task = ray.remote(worker.race_run).options(num_cpus=spec.resources.cpu,
                                               num_gpus=spec.resources.gpu)
    alive = list(cands)
    for rnd in range(1, r.seeds + 1):
        todo = [c for c in alive if len(c["runs"]) < rnd]
        per_run = max(int(cfgs[c["trial"]]["optim"].get("epochs") or 0) for c in cands) or 0
        if todo and len(todo) * per_run > _budget_left(spec, study):
            say(f"race stopped before round {rnd}: budget_epochs cannot hold {len(todo)} more "
                "run(s)")
            break
        _round(todo, cfgs, task, rnd, spec.race.window, write, say)
        alive = racing.survivors(alive, evidence=cands)
        ids = {c["trial"] for c in alive}
        dropped = [c["trial"] for c in cands if c["trial"] not in ids and len(c["runs"]) == rnd]
        if dropped:
            say(f"race round {rnd}: trial(s) {', '.join(map(str, dropped))} out")
        if len(alive) == 1:
            break
    if not any(c["runs"] for c in cands):
        say("race skipped: no re-evaluation run fits; the best single run stands")
        return
    best = racing.leader(alive, r.rule)
    write(alive, best["trial"])
    for line in race_lines(st.race(study) or {}):
        say(line)


def _round(todo: list[dict[str, Any]], cfgs: dict[int, dict[str, Any]], task: Any, rnd: int,
           window: int, write: Callable[[], None], say: Callable[[str], None]) -> None:
    pending = {}
    for c in todo:
        cfg = dict(cfgs[c["trial"]])
        cfg["seed"] = int(cfg.get("seed") or 0) + SEED_STEP * rnd
        pending[task.remote(cfg, *worker.handed_over())] = c
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        c = pending.pop(done[0])
        try:
            out = ray.get(done[0])
        except Exception as err:  # a lost node, say: the run is not the EDF's result
            say(f"race: a run of trial {c['trial']} failed ({str(err).splitlines()[0][:120]}); "
                "it is left out")
            continue
        run = _run_record(out, window)
        c["runs"].append(run)
        write()
        scores = racing.scores(c)
        what = f"failed ({run['failed']}), scores 0" if run.get("failed") else \
            f"val_acc score {run['score']:.4f}"
        say(f"race: trial {c['trial']} seed {run['seed']}: {what} | mean "
            f"{statistics.mean(scores):.4f} over {len(scores)} run(s)")
