from pathlib import Path

import pytest

from dm_search.study.reading import load_spec
from dm_search.study.spec import StudySpec
from dm_search.training.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "search_spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_every_shipped_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.name
    assert spec.base_config().data.val_fraction > 0


def test_shipped_specs_cover_the_paper_protocols():
    names = {p.stem for p in SPECS}
    assert {"quickstart", "paper_grid", "template", "cifar10_sym40", "cifar10_asym40",
            "cifar100_sym40", "cifar100_asym40"} <= names
    for stem in ("cifar10_sym40", "cifar100_asym40"):
        spec = load_spec(ROOT / "search_spaces" / f"{stem}.yaml")
        base = spec.base_config()
        assert base.model.name in ("resnet44", "resnet56")
        assert spec.resources.gpu > 0 and spec.final.enabled
        assert base.optim.iterations == 30000 and base.optim.batch_size == 256
    grid = load_spec(ROOT / "search_spaces" / "paper_grid.yaml")
    assert grid.sampler.name == "grid" and len(grid.space.grid) == 16  # and CE, a baseline
    assert grid.baselines == ["cce"] and grid.scheduler.name == "none"


def test_quickstart_inlines_its_base_with_overrides():
    spec = load_spec(ROOT / "search_spaces" / "quickstart.yaml")
    assert spec.base_config().data.name == "mnist1d"
    assert spec.base_config().optim.epochs == 30


def _spec(**kw):
    data = {"name": "s", "base": {"data": {"name": "mnist1d"}, "optim": {"epochs": 10}}}
    data.update(kw)
    return StudySpec.model_validate(data)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"space": {"families": {"dmm": {}}}}, r"unknown EDF family; known: beta, cce, dm"),
        ({"space": {"families": {"dm": {"mode": [0.5, 1.0]}}}}, r"mode must be < 1"),
        ({"space": {"families": {"cce": {"mode": 0.2}}}}, r"'cce' has no parameters to search; "
         r"list it under baselines"),
        ({"space": {"families": {"dm": {}, "cce": {}}}}, r"list it under baselines"),
        ({"scheduler": {"grace_period": 3, "grace_fraction": 0.3}}, r"not both"),
        ({"scheduler": {"grace_fraction": 1.5}}, r"grace_fraction"),
        ({"baselines": ["cce", "cce"]}, r"baselines\[1\]: 'cce' is listed twice"),
        ({"baselines": ["dm:lam=-1"]}, r"baselines\[0\]: .*'lam'=-1.0 is outside"),
        ({"baselines": ["nope"]}, r"baselines\[0\]: Unknown EDF family 'nope'"),
        ({"space": {"families": {"dm": {"mean": [0.3, 0.6]}}}}, r"give both mean and std"),
        ({"space": {"families": {"gce": {"mean": [0.4, 0.45], "std": [0.1, 0.2]}}}},
         r"one free parameter, so its std follows from its mean"),
        ({"space": {"families": {"dm": {"mode": [0, 0.5], "mean": [0.3, 0.6],
                                        "std": [0.1, 0.2]}}}}, r"not both"),
        ({"space": {"families": {"dm": {"mean": [0.8, 0.95], "std": [0.25, 0.3]}}}},
         r"most of mean \[0.8, 0.95\] x std \[0.25, 0.3\] is out of reach.*dm reaches mean"),
        ({"space": {"families": {"gce": {"mean": [0.6, 0.9]}}}},
         r"'gce' reaches no mean in \[0.6, 0.9\]"),
        ({"space": {"families": {"gce": {"spread": [1, 2]}}}}, r"has no spread"),
        ({"space": {"families": {"exponential": {"mode": [0.0, 0.5]}}}}, r"must be 0 or 1"),
        ({"space": {"families": {"dm": {"spread": [5, 1]}}}}, r"low <= high"),
        ({"space": {"params": {"optim.lrr": {"low": 0.1, "high": 0.2}}}}, r"not a usable"),
        ({"space": {"params": {"optim.lr": {"low": 0, "high": 1, "log": True}}}}, r"low > 0"),
        ({"sampler": {"name": "grid"}}, r"sampler grid needs space.grid"),
        ({"space": {"families": {"dm": {}}, "grid": [{"family": "dm", "optim.lr": 0.1}]},
          "sampler": {"name": "grid"}, "n_trials": 1}, r"optim.lr, which space.params does not"),
        ({"scheduler": {"grace_period": 50}}, r"grace_period \(50\) exceeds"),
        ({"base": {"data": {"val_fraction": 0.0}}}, r"needs a clean validation split"),
        ({"base": {"optim": {"lr": -1}}}, r"optim.lr"),
    ],
)
def test_bad_specs_are_refused_naming_the_problem(kw, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        _spec(**kw)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        # What pydantic checks, in the words a user reads: the file, the field, the fix, and
        # the value that was given.
        ("name: has space\n", r"s.yaml is not valid:\n  name: String should match pattern "
                              r".*\(got 'has space'\)"),
        ("name: x\nn_trial: 3\n", r"s.yaml is not valid:\n  n_trial: unknown key \(remove it or "
                                  r"check its spelling\) \(got 3\)"),
    ],
)
def test_pydantic_errors_read_as_the_user_wrote_them(tmp_path, body, match):
    p = tmp_path / "s.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=match):
        load_spec(p)


def test_load_spec_errors_name_the_file_and_field(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("name: x\nn_trials: 0\n")
    with pytest.raises(ConfigError, match=r"s.yaml is not valid:\n  n_trials: Input should be "
                                          r"greater than or equal to 1"):
        load_spec(p)


def test_identity_ignores_budget_and_storage_but_not_the_space():
    a = _spec()
    assert a.identity() == _spec(n_trials=99, max_concurrent=7, storage="sqlite:///x.db",
                                 name="other").identity()
    assert a.identity() == _spec(budget_epochs=500).identity()
    assert a.identity() == _spec(final={"enabled": True, "lr_factors": [0.5, 2]}).identity()
    assert a.identity() != _spec(space={"families": {"dm": {}, "gce": {}}}).identity()
    assert a.identity() != _spec(baselines=["cce", "gce:q=0.7"]).identity()
    assert "storage" not in _spec(storage="postgresql://u:secret@h/db").stored()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"scheduler": {"name": "asha", "min_trials": 3}},
         r"scheduler 'asha' does not use min_trials; it takes grace_fraction, grace_period, "
         r"reduction_factor"),
        ({"scheduler": {"name": "none", "grace_fraction": 0.3}},
         r"scheduler 'none' does not use grace_fraction; it takes no options"),
        ({"scheduler": {"name": "median", "trend": 2}}, r"'median' does not use trend"),
        ({"budget_epochs": 5}, r"budget_epochs \(5\) cannot hold the 1 baseline\(s\) and one "
                               r"searched trial of 10 epochs each: raise it to at least 20"),
    ],
)
def test_options_that_would_be_ignored_and_budgets_that_hold_nothing_are_refused(kw, match):
    with pytest.raises((ValueError, ConfigError), match=match):
        _spec(**kw)


def test_a_spec_dumped_whole_validates_again():
    # A detached study sends its resolved spec, every default included, to the cluster.
    for scheduler in ({"name": "asha"}, {"name": "median"}, {"name": "none"}, {}):
        spec = _spec(scheduler=scheduler)
        again = StudySpec.model_validate(spec.model_dump(mode="json"))
        assert again.identity() == spec.identity()


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("name: x\nbase: nowhere.yaml\n", r"base: the trial config 'nowhere.yaml' does not exist"),
        ("name: x\nbase: {optim: {epochs: 3}}\nbase_set: optim.epochs=5\n",
         r"base_set must be a list of a.b=value strings.*got 'optim.epochs=5'"),
        ("name: x\nbase: {optim: {epochs: 3}}\nbase_set: [optim.epochs]\n",
         r"base_set: .*must look like a\.b=value"),
        ("name: x\nbase: empty.yaml\n", r"base: .*empty.yaml is empty"),
    ],
)
def test_base_and_base_set_mistakes_name_them(tmp_path, body, match):
    (tmp_path / "empty.yaml").write_text("")
    p = tmp_path / "s.yaml"
    p.write_text(body)
    with pytest.raises(ConfigError, match=match):
        load_spec(p)


def test_lr_factors_are_multiples_other_than_one():
    assert _spec(final={"lr_factors": [2, 0.5, 2]}).final.lr_factors == (0.5, 2.0)
    for bad in ([1], [0], [-0.5], [float("inf")]):
        with pytest.raises(ValueError, match="lr_factors"):
            _spec(final={"lr_factors": bad})


@pytest.mark.parametrize(("family", "match"), [
    ({"dm": {"ramp": ["cosine"]}}, r"dm: ramp says how the EDF moves, but no end.*mode_end"),
    ({"dm": {"mode_end": [0.2, 1.0]}}, r"dm: the end range reaches an invalid schedule"),
    ({"dm": {"mean": [0.3, 0.5], "std": [0.15, 0.2], "mode_end": [0.2, 0.5]}},
     r"mode/spread or mean/std, not both|mode_end is in the other coordinates"),
    ({"dm": {"mode_end": [0.6, 0.2]}}, r"dm\.mode_end: need low <= high"),
    ({"dm": {"mode_end": 0.5, "ramp_start": [0.2, 0.8], "ramp_end": [0.5, 1.0]}},
     r"ramp_start \[0\.2, 0\.8\] reaches past ramp_end"),
    ({"dm": {"mode_end": 0.5, "ramp": "sigmoid"}}, r"ramp"),
    ({"gce": {"mode_end": 0.4, "spread_end": 3}}, r"'gce' has no spread"),
    ({"exponential": {"mode_end": 1.0}}, r"exponential.*spread, not its mode"),
    ({"gce": {"mean": [0.35, 0.45], "mean_end": 0.4, "std_end": 0.2}}, r"give only mean_end"),
])
def test_bad_schedule_spaces_are_refused_naming_the_field(family, match):
    with pytest.raises(ValueError, match=match):
        StudySpec.model_validate({"name": "s", "base": {"optim": {"epochs": 10}},
                                  "space": {"families": family}})


def test_a_start_in_mode_spread_with_an_end_in_mean_std_names_the_end():
    with pytest.raises(ValueError, match=r"mean_end is in the other coordinates"):
        StudySpec.model_validate({"name": "s", "base": {"optim": {"epochs": 10}}, "space": {
            "families": {"dm": {"mode": [0.1, 0.5], "spread": [4, 24], "mean_end": 0.4}}}})


def test_a_schedule_in_the_base_is_refused_rather_than_dropped():
    base = {"optim": {"epochs": 10},
            "loss": {"edf": {"family": "dm"}, "edf_end": {"family": "dm", "lam": 2.0}}}
    with pytest.raises(ValueError, match=r"base\.loss\.edf_end: a study takes each trial's EDF"):
        StudySpec.model_validate({"name": "s", "base": base})
