"""A small finished study written straight into a database, as the search records it, so that
report, export and dashboard tests need no Ray run."""

from __future__ import annotations

from typing import Any

import optuna

from dm_search import storage as st
from dm_search.edf import EDF
from dm_search.space import make_space, trial_config_for
from dm_search.spec import StudySpec

SPEC: dict[str, Any] = {
    "name": "made",
    "base": {"data": {"name": "mnist1d", "noise": {"kind": "symmetric", "rate": 0.4}},
             "optim": {"epochs": 6}},
    "space": {"families": {"dm": {}, "gce": {}}},
    "final": {"enabled": True, "seeds": 2},
}
# (edf params, val_acc at each epoch, epochs run): 6 epochs is the full budget
TRIALS: list[tuple[dict[str, Any], list[float], str]] = [
    ({"family": "dm", "dm.mode": 1 / 3, "dm.spread": 8.0}, [.5, .6, .7, .75, .78, .80], "full"),
    ({"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0}, [.5, .65, .72, .80, .83, .84], "full"),
    ({"family": "cce"}, [.55, .60, .62, .61, .58, .55], "full"),  # the CE reference
    ({"family": "gce", "gce.mode": 0.4}, [.5, .6, .7, .74, .76, .77], "full"),
    ({"family": "dm", "dm.mode": 0.7, "dm.spread": 3.0}, [.9], "early"),  # stopped after 1
    ({"family": "dm", "dm.mode": 0.1, "dm.spread": 20.0}, [.4, .5, .6, .7, .72, .74], "full"),
    ({"family": "dm", "dm.mode": 0.2, "dm.spread": 5.0}, [.5, .6], "failed"),
    ({"family": "dm", "dm.mode": 0.6, "dm.spread": 12.0}, [.5, .6, .7, .75, .78, .79], "full"),
]


def make_study(url: str, trials: list | None = None) -> optuna.Study:
    spec = StudySpec.model_validate(SPEC)
    storage = st.open_storage(url)
    study = st.open_study(storage, spec, resume=False).study
    space = make_space(spec)
    for params, curve, kind in TRIALS if trials is None else trials:
        if params["family"] == "cce":
            trial = st.new_reference_trial(study,
                                           trial_config_for(spec, EDF("cce")).to_dict())
        else:
            study.enqueue_trial(params)
            trial = study.ask()
            st.record_trial_config(trial, space(trial)["trial_config"])
        hist = [{"epoch": e + 1, "val_acc": v, "test_acc": v - 0.01, "memorised": 0.1 * e,
                 "train_loss": 1.0, "epoch_s": 0.1} for e, v in enumerate(curve)]
        trial.set_user_attr(st.A_HISTORY, hist)
        trial.set_user_attr(st.A_FINAL, hist[-1])
        trial.set_user_attr(st.A_EPOCHS, len(curve))
        trial.set_user_attr(st.A_TOTAL, 6)
        trial.set_user_attr(st.A_NODE, {"ip": "127.0.0.1", "id": "abc123"})
        for e, v in enumerate(curve):
            trial.report(v, e + 1)
        if kind == "failed":
            trial.set_user_attr(st.A_STOP, "failed: TrialDiverged: trial diverged in epoch 2")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif kind == "early":  # as the search records a trial its scheduler stopped
            trial.set_user_attr(st.A_STOP, st.EARLY)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            trial.set_user_attr(st.A_STOP, st.FINISHED)
            study.tell(trial, curve[-1])
    study.set_user_attr(st.S_FINGERPRINT, "0123456789abcdef")
    study.set_user_attr(st.S_FINAL, {
        "seeds": 2,
        "best": {"trial": 1, "edf": {"family": "dm", "lam": 1.0, "beta": 16.0},
                 "runs": [{"test_acc": 0.85}, {"test_acc": 0.87}], "test_acc_mean": 0.86,
                 "test_acc_std": 0.0141},
        "ce": {"edf": {"family": "cce"}, "runs": [{"test_acc": 0.60}, {"test_acc": 0.62}],
               "test_acc_mean": 0.61, "test_acc_std": 0.0141},
        "gain": 0.25,
    })
    return study
