"""The final stage: the best configuration and plain cross-entropy retrained on the full
training set over several seeds (and at other learning rates), on the Ray cluster."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import optuna
import ray

from dm_search import storage as st
from dm_search.common.labels import final_stage_line, final_warning, lr_range_line
from dm_search.driver import worker
from dm_search.driver.progress import config_label
from dm_search.edf import EDF
from dm_search.study import racing
from dm_search.study.space import trial_config_for
from dm_search.study.spec import StudySpec
from dm_search.training.config import TrialConfig

__all__ = ["run_final_stage"]


def run_final_stage(spec: StudySpec, study: optuna.Study, say: Callable[[str], None],
                    ) -> dict[str, Any] | None:
    """Retrain the best trial and CE on the whole training set; the result when it ran now
    (None when skipped, or done already for this best trial)."""
    best = st.best_trial(study)
    if best is None:
        say("final stage skipped: no trial ran its full budget")
        return None
    done = st.final_stage(study)
    done_factors = [r["factor"] for r in (done or {}).get("lr_sensitivity") or [] if
                    r["factor"] != 1.0]
    if done and done.get("best", {}).get("trial") == best.number and \
            done.get("seeds") == spec.final.seeds and \
            tuple(done_factors) == spec.final.lr_factors:
        say("final stage already done for the current best trial")
        return None
    best_cfg = TrialConfig.from_dict(st.trial_config(best))
    # The CE the best is compared with: the study's CE reference where it has one (the same
    # recipe it was measured with during the search), else plain CE on the base config.
    ce_ref = next((t for t in st.reference_trials(study)
                   if (st.trial_edf(t) or {}).get("family") == "cce"), None)
    ce_cfg = (TrialConfig.from_dict(st.trial_config(ce_ref)) if ce_ref is not None
              else trial_config_for(spec, EDF("cce")))
    f = spec.final
    say(f"final stage: retraining trial {best.number} ({config_label(best_cfg.to_dict())}) and "
        f"plain CE on the full training set, {f.seeds} seed(s) each"
        + (f"; then at lr x {', '.join(f'{x:g}' for x in f.lr_factors)} "
           f"({f.lr_seeds} seed(s) each)" if f.lr_factors else ""))
    result = _retrain(spec, best.number, best_cfg, ce_cfg)
    st.record_final_stage(study, result)
    say(final_stage_line(result))
    for line in (final_warning(result), lr_range_line(result)):
        if line:
            say(line)
    return result


def _full(cfg: TrialConfig, seed: int, lr_factor: float = 1.0) -> dict[str, Any]:
    """``cfg`` on the whole training set (no validation split), with ``seed`` and its lr
    scaled by ``lr_factor``."""
    d = cfg.to_dict()
    d["seed"] = seed
    if d["data"] is not None:  # a trainer's own data: trial.final tells it
        d["data"] = {**d["data"], "val_fraction": 0.0}
    d["optim"] = {**d["optim"], "lr": cfg.optim.lr * lr_factor}
    return d


def _agg(runs: list[dict[str, Any]]) -> dict[str, Any]:
    acc = [r["test_acc"] for r in runs]
    return {"runs": runs, "test_acc_mean": statistics.mean(acc),
            "test_acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "spread": round(racing.spread(acc), 3), "unstable": racing.unstable(acc)}


def _retrain(spec: StudySpec, number: int, best_cfg: TrialConfig,
             ce_cfg: TrialConfig) -> dict[str, Any]:
    """Every final run on the cluster at once, so that they share its slots; the result as
    the study records it."""
    f = spec.final
    task = ray.remote(worker.final_run).options(num_cpus=spec.resources.cpu,
                                                num_gpus=spec.resources.gpu)
    given = worker.handed_over()
    refs_best = [task.remote(_full(best_cfg, s), *given) for s in range(f.seeds)]
    refs_ce = [task.remote(_full(ce_cfg, s), *given) for s in range(f.seeds)]
    refs_lr = {x: ([task.remote(_full(best_cfg, s, x), *given) for s in range(f.lr_seeds)],
                   [task.remote(_full(ce_cfg, s, x), *given) for s in range(f.lr_seeds)])
               for x in f.lr_factors}
    result: dict[str, Any] = {
        "seeds": f.seeds,
        "unstable_points": racing.UNSTABLE_POINTS,
        "best": {"trial": number, "edf": best_cfg.loss.edf,
                 **({"edf_end": best_cfg.loss.edf_end,
                     "ramp": best_cfg.to_dict()["loss"]["ramp"]} if best_cfg.loss.edf_end
                    else {}),
                 **_agg(ray.get(refs_best))},
        "ce": {"edf": {"family": "cce"}, **_agg(ray.get(refs_ce))},
    }
    result["gain"] = result["best"]["test_acc_mean"] - result["ce"]["test_acc_mean"]
    if f.lr_factors:
        rows = [{"factor": 1.0, "lr_best": best_cfg.optim.lr, "lr_ce": ce_cfg.optim.lr,
                 "best": result["best"]["test_acc_mean"], "ce": result["ce"]["test_acc_mean"],
                 "seeds": f.seeds}]
        for x, (rb, rc) in refs_lr.items():
            b, c = _agg(ray.get(rb)), _agg(ray.get(rc))
            rows.append({"factor": x, "lr_best": best_cfg.optim.lr * x,
                         "lr_ce": ce_cfg.optim.lr * x, "best": b["test_acc_mean"],
                         "ce": c["test_acc_mean"], "seeds": f.lr_seeds})
        result["lr_sensitivity"] = sorted(rows, key=lambda r: r["factor"])
    return result
