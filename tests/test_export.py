"""Export: the best full-budget trial as a versioned EDF file, and load_loss back."""

import optuna
import pytest
import torch

from dm_search import EDF, DMLoss, load_loss
from dm_search.export import ExportError, export_trial, read_export, write_export

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study(tmp_path, make_study):
    return make_study(f"sqlite:///{tmp_path}/studies.db")


def test_export_best_and_round_trip_gives_the_trials_gradient(study, tmp_path):
    doc = export_trial(study)
    assert doc["provenance"]["trial"] == 1 and doc["edf"] == {"family": "dm", "lam": 1.0,
                                                              "beta": 16.0}
    assert doc["mode"] == 0.5 and doc["spread"] == 16.0
    assert doc["mean"] == pytest.approx(0.5) and 0.15 < doc["std"] < 0.2
    assert doc["result"]["final_test_acc_mean"] == 0.86
    assert doc["result"]["ce_test_acc_mean"] == 0.61
    for suffix in ("yaml", "json"):
        path = write_export(doc, tmp_path / f"best.{suffix}")
        assert read_export(path) == doc
        loaded = load_loss(path)
        cfg = study.trials[1].user_attrs["config"]["loss"]
        direct = DMLoss(EDF.from_config(cfg["edf"]), normalise=cfg["normalise"], eps=cfg["eps"])
        z = torch.randn(32, 10, dtype=torch.float64)
        y = torch.randint(0, 10, (32,))
        grads = []
        for fn in (loaded, direct):
            x = z.clone().requires_grad_()
            fn(x, y).backward()
            grads.append(x.grad)
        assert torch.equal(grads[0], grads[1])


def test_export_refuses_what_is_not_eligible(study, tmp_path):
    with pytest.raises(ExportError, match=r"trial 4 is early-stopped \(1 of 6 epochs\)"):
        export_trial(study, 4)
    with pytest.raises(ExportError, match=r"no trial 99; its trials are 0\.\.7"):
        export_trial(study, 99)
    assert export_trial(study, 2)["edf"] == {"family": "cce"}
    empty = optuna.create_study(storage=f"sqlite:///{tmp_path}/e.db", study_name="empty")
    with pytest.raises(ExportError, match="no trial that ran its full budget"):
        export_trial(empty)


def test_load_loss_checks_the_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("edf: {family: dm}\n")
    with pytest.raises(ExportError, match="not a dm-search EDF export"):
        load_loss(bad)
    bad.write_text("dm_search_edf: 7\nedf: {family: dm}\nloss: {normalise: batch}\n")
    with pytest.raises(ExportError, match=r"schema version 7; .* reads version 1"):
        load_loss(bad)
    bad.write_text("dm_search_edf: 1\nedf: {family: dm, lam: -1}\nloss: {normalise: batch}\n")
    with pytest.raises(ExportError, match="'lam'=-1"):
        load_loss(bad)
