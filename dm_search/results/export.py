"""Take a study's answer home: the best EDF (or trial N's) from the study database, with its
training recipe, its race and its final stage, as the document that
:mod:`dm_search.training.exported` writes to a file and ``load_loss`` reads back.

    dm-search export quickstart -o best_edf.yaml
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from dm_search._version import __version__
from dm_search.common.labels import lr_range
from dm_search.edf import EDF
from dm_search.study.racing import UNSTABLE_POINTS, spread, unstable
from dm_search.training.exported import (
    SCHEDULE_VERSION,
    SCHEMA_KEY,
    SCHEMA_VERSION,
    ExportError,
)
from dm_search.training.recipe import Recipe

__all__ = ["export_trial"]


def _race_result(race: dict[str, Any], number: int) -> dict[str, Any]:
    """How trial ``number`` did over its race's seeds on the search's split (empty when it did
    not race): a wide spread says that its search run was a lucky (or unlucky) draw."""
    raced = next((c for c in race.get("candidates") or [] if c["trial"] == number), None)
    if raced is None:
        return {}
    return {"race": {
        "rule": race["rule"], "window": race["window"], "winner": race.get("winner") == number,
        "val_scores": [raced["search_score"], *[r.get("score") for r in raced["runs"]]],
        "val_score_mean": raced["mean"], "val_score_std": raced["std"],
        "spread_points": raced["spread"], "unstable": bool(raced.get("unstable"))}}


def export_trial(study: Any, trial_number: int | None = None) -> dict[str, Any]:
    """The export document of the best full-budget trial, or of trial ``trial_number``.

    Only trials that ran their full budget can be exported: an early-stopped trial's accuracy
    is an early epoch's and would overstate nothing but also prove nothing.
    """
    from dm_search import storage as st

    trial = _exported_trial(study, trial_number)
    cfg = st.trial_config(trial)
    edf = EDF.from_config(cfg["loss"]["edf"])
    result: dict[str, Any] = {"val_acc": trial.value,
                              "test_acc_at_search": st.trial_final(trial).get("test_acc")}
    result.update(_race_result(st.race(study) or {}, trial.number))
    result.update(_final_result(st.final_stage(study), trial.number))
    data = cfg["data"] or {}  # a training loop of one's own may bring its own data
    # The epochs asked for; with an iteration budget, the epochs those came to.
    total = cfg["optim"].get("epochs") or st.trial_epochs(trial)[1] or 1
    schedule = st.trial_schedule(trial)
    extra: dict[str, Any] = {}
    if schedule is not None:
        end = EDF.from_config(schedule["edf_end"])
        extra["schedule"] = {"edf_end": end.to_config(), "ramp": schedule["ramp"],
                             "mode_end": end.mode, "spread_end": end.spread,
                             "mean_end": round(end.mean, 6), "std_end": round(end.std, 6)}
    provenance = st.study_provenance(study)
    return {
        SCHEMA_KEY: SCHEDULE_VERSION if schedule else SCHEMA_VERSION,
        "edf": edf.to_config(),
        **extra,
        "loss": {"normalise": cfg["loss"]["normalise"], "eps": cfg["loss"]["eps"]},
        # The EDF won with this optimiser and schedule; its lr interacts strongly with the EDF.
        "recipe": Recipe.from_config(cfg["optim"], int(total)).to_dict(),
        "mode": edf.mode,
        "spread": edf.spread,
        "mean": round(edf.mean, 6),
        "std": round(edf.std, 6),
        "result": result,
        "provenance": {
            "study": study.study_name,
            "trial": trial.number,
            "dataset": data.get("name", "the training loop's own"),
            "noise": data.get("noise"),
            "val_fraction": data.get("val_fraction"),
            "model": cfg["model"]["name"],
            **({"trainer": cfg["trainer"]} if cfg.get("trainer") else {}),
            "dataset_fingerprint": provenance["fingerprint"],
            "dm_search_version": __version__,
            "study_version": provenance["version"],
            "exported": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    }


def _exported_trial(study: Any, trial_number: int | None) -> Any:
    """The trial to export, or ExportError saying why there is none."""
    from dm_search import storage as st

    if trial_number is None:
        trial = st.best_trial(study)
        if trial is None:
            raise ExportError(f"study {study.study_name!r} has no trial that ran its full budget "
                              "yet; let it run, or resume it if it stopped (dm-search status "
                              "says which, and how)")
        return trial
    numbers = {t.number: t for t in study.get_trials(deepcopy=False)}
    if trial_number not in numbers:
        raise ExportError(f"study {study.study_name!r} has no trial {trial_number}; its "
                          f"trials are 0..{max(numbers, default=-1)}")
    trial = numbers[trial_number]
    twin = st.duplicate_of(trial)
    if twin is not None:
        raise ExportError(f"trial {trial_number} repeats trial {twin}'s configuration and was "
                          f"not trained; export trial {twin} instead (--trial {twin})")
    if not st.ran_full_budget(trial):
        raise ExportError(
            f"trial {trial_number} is {st.stop_reason(trial)} "
            f"({st.trial_epochs(trial)[0] or 0} of "
            f"{st.trial_epochs(trial)[1] or '?'} epochs): only trials that ran their "
            "full budget can be exported"
        )
    return trial


def _final_result(final: dict[str, Any] | None, number: int) -> dict[str, Any]:
    """What the final stage measured for trial ``number`` (nothing if it retrained another)."""
    if not final or final.get("best", {}).get("trial") != number:
        return {}
    accs = [r["test_acc"] for r in final["best"].get("runs") or []]
    result: dict[str, Any] = {
        "final_test_acc_mean": final["best"]["test_acc_mean"],
        "final_test_acc_std": final["best"]["test_acc_std"],
        "final_test_accs": accs,
        "final_spread_points": round(spread(accs), 3),
        "final_unstable": unstable(accs, final.get("unstable_points", UNSTABLE_POINTS)),
        "ce_test_acc_mean": final["ce"]["test_acc_mean"],
        "ce_test_acc_std": final["ce"]["test_acc_std"],
        "final_seeds": final["seeds"],
    }
    if final.get("lr_sensitivity"):
        span = lr_range(final)
        result["lr_sensitivity"] = [
            {"lr": r["lr_best"], "factor": r["factor"], "test_acc": r["best"],
             "ce_lr": r["lr_ce"], "ce_test_acc": r["ce"], "seeds": r["seeds"]}
            for r in final["lr_sensitivity"]]
        # Where the EDF's advantage holds: outside it, CE is the safer loss.
        result["beats_ce_for_lr"] = list(span) if span else None
    return result
