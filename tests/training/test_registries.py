"""Guards over every registry and every named choice: a new dataset, model, noise kind, EDF
family, sampler, scheduler or optimiser fails here until a test covers it."""

from __future__ import annotations

import math
import typing

import pytest
import torch

from dm_search import edf as edf_mod
from dm_search.study.spec import SamplerSpec, SchedulerSpec
from dm_search.study.stopping import MedianRule, NoStopping, RungRule, replay
from dm_search.training import data as data_mod
from dm_search.training import models
from dm_search.training.config import NoiseConfig, OptimConfig, TrialConfig
from dm_search.training.trainer import run_trial


def _choices(model: type, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))


# What the tests that load each dataset cover (tests/training/test_data.py).
TESTED_DATASETS = {"mnist1d", "digits", "npz", "imagefolder", "cifar10", "cifar100", "mnist",
                   "fashion_mnist", "svhn"}


def test_every_dataset_has_a_loading_test():
    assert set(data_mod.names()) == TESTED_DATASETS


def test_every_model_is_built_by_the_parametrised_model_test():
    from tests.training import test_models

    marks = test_models.test_every_model_builds_and_classifies.pytestmark
    (param,) = [m for m in marks if m.name == "parametrize"]
    assert set(param.args[1]) == set(models.names())


@pytest.mark.parametrize("family", edf_mod.names())
def test_every_edf_family_weighs_finitely_and_has_moments(family):
    edf = edf_mod.EDF(family)  # every family builds from its defaults
    p = torch.linspace(0.01, 0.99, 99, dtype=torch.float64)
    w = edf.weight(p)
    assert torch.isfinite(w).all() and (w >= 0).all()
    assert 0.0 <= edf.mean <= 1.0 and 0.0 <= edf.std <= 0.5
    assert edf_mod.EDF.from_config(edf.to_config()) == edf
    assert str(edf).startswith(family) and repr(edf).startswith(f"EDF({family!r}")


def test_the_noise_registry_and_the_config_name_the_same_kinds():
    assert set(data_mod.noise_kinds()) == _choices(NoiseConfig, "kind")


@pytest.mark.parametrize("kind", data_mod.noise_kinds())
def test_every_noise_kind_corrupts_at_its_rate(kind, tmp_path, data_root):
    noise: dict = {"kind": kind}
    if kind in ("symmetric", "asymmetric"):
        noise["rate"] = 0.4
    if kind == "file":
        clean = data_mod.prepare_data(data_mod.DataConfig(
            name="digits", val_fraction=0.0, root=str(data_root)))
        flipped = (clean.y_train + (torch.arange(len(clean.y_train)) % 2)) % 10
        torch.save(flipped, tmp_path / "labels.pt")
        noise["path"] = str(tmp_path / "labels.pt")
    prepared = data_mod.prepare_data(data_mod.DataConfig(
        name="digits", noise=noise, val_fraction=0.0, root=str(data_root)))
    expected = {"none": 0.0, "symmetric": 0.4, "asymmetric": 0.4, "file": 0.5}[kind]
    assert prepared.noise_rate == pytest.approx(expected, abs=0.05)


def test_every_sampler_is_covered_by_the_sampler_test():
    from tests.study import test_space

    marks = test_space.test_samplers_and_reseeding.pytestmark
    (param,) = [m for m in marks if m.name == "parametrize"]
    assert set(param.args[1]) == _choices(SamplerSpec, "name")


@pytest.mark.parametrize("name", sorted(_choices(SchedulerSpec, "name")))
def test_every_scheduler_builds_its_rule_and_runs_a_replay(name):
    pytest.importorskip("ray")
    from dm_search.driver.scheduling import RuleScheduler
    from dm_search.study.spec import StudySpec

    spec = StudySpec.model_validate({"name": "s", "base": {}, "scheduler": {"name": name}})
    rule = RuleScheduler(spec)._make(30)
    expected = {"rung": RungRule, "asha": RungRule, "median": MedianRule, "none": NoStopping}
    assert type(rule) is expected[name]
    curves = [[min(1.0, 0.02 * e * (k + 1) / 5) for e in range(1, 31)] for k in range(8)]
    out = replay(curves, rule, workers=2, order=list(reversed(range(8))))  # best first
    assert out.regret == 0 and 0 < out.compute <= 1  # the steadily best trial is kept
    if name != "none":
        assert out.compute < 1  # and something was stopped


@pytest.mark.parametrize("optimizer", sorted(_choices(OptimConfig, "optimizer")))
def test_every_optimiser_trains(optimizer, data_root):
    lr = 0.05 if optimizer == "sgd" else 0.005
    cfg = TrialConfig.from_dict({
        "data": {"name": "mnist1d", "num_samples": 600, "root": str(data_root),
                 "noise": {"kind": "symmetric", "rate": 0.2}},
        "model": {"name": "mlp", "options": {"width": 32}},
        "optim": {"optimizer": optimizer, "epochs": 3, "batch_size": 64, "lr": lr},
        "diagnostics": False, "threads": 1,
    })
    r = run_trial(cfg)
    losses = [h["train_loss"] for h in r.history]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
