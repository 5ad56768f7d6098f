from pathlib import Path

import pytest

from dm_search.training.config import ConfigError, TrialConfig, apply_overrides, load_trial_config

EXAMPLES = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_shipped_examples_are_valid(path):
    import yaml

    if "space" in yaml.safe_load(path.read_text()):  # a study spec (own_model.yaml)
        from dm_search.study.reading import load_spec

        cfg = load_spec(path).base_config()
    else:
        cfg = load_trial_config(path)
    assert cfg.loss.build_edf() is not None


def test_the_documented_example():
    cfg = load_trial_config(Path(__file__).resolve().parents[2] / "examples/mnist1d_dm.yaml")
    assert cfg.data.name == "mnist1d" and cfg.data.noise.kind == "symmetric"
    assert cfg.data.noise.rate == 0.4 and cfg.data.val_fraction == 0.2
    assert cfg.loss.edf == {"family": "dm", "lam": 0.5, "beta": 8.0}
    assert cfg.optim.schedule == "cosine" and cfg.optim.epochs == 60


def test_overrides_parse_values_as_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 0.1}\n")
    cfg = load_trial_config(p, ["optim.lr=0.02", "optim.nesterov=true",
                                "optim.milestones=[0.3, 0.6]", "optim.schedule=multistep"])
    assert cfg.optim.lr == 0.02 and cfg.optim.nesterov is True
    assert cfg.optim.milestones == (0.3, 0.6)


def test_switching_family_replaces_the_whole_edf_mapping():
    dm = {"loss": {"edf": {"family": "dm", "lam": 0.5, "beta": 8.0}}}
    with pytest.raises(ConfigError, match=r"loss.edf: .*unknown parameter\(s\) beta, lam"):
        TrialConfig.from_dict(apply_overrides(dm, ["loss.edf.family=gce"]))
    cfg = TrialConfig.from_dict(apply_overrides(dm, ["loss.edf={family: gce, q: 0.5}"]))
    assert cfg.loss.edf == {"family": "gce", "q": 0.5}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"optim": {"lrr": 0.1}}, r"optim.lrr: unknown key"),
        ({"optim": {"lr": -1}}, r"optim.lr: Input should be greater than 0 \(got -1\)"),
        ({"data": {"noise": {"kind": "symetric", "rate": 0.2}}},
         r"data.noise.kind: Input should be 'none', 'symmetric', 'asymmetric' or 'file'"),
        ({"data": {"noise": {"kind": "symmetric"}}}, r"needs rate > 0"),
        ({"loss": {"edf": {"family": "dm", "lam": -1}}}, r"loss.edf: .*'lam'=-1"),
        ({"optim": {"epochs": 3, "iterations": 10}}, r"either epochs or iterations"),
        ({"device": "tpu"}, r"device: .*auto, cpu, cuda"),
    ],
)
def test_errors_name_the_field_value_and_what_is_allowed(data, match):
    with pytest.raises(ConfigError, match=match):
        TrialConfig.from_dict(data, source="my.yaml")


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_trial_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_trial_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match=r"must look like a\.b=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"optim": {"lr": 1}}, ["optim.lr.x=2"])


def test_round_trip_and_frozen():
    cfg = TrialConfig.from_dict({"optim": {"lr": 0.3}, "model": {"name": "mlp",
                                                                 "options": {"width": 8}}})
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(Exception, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]


def test_the_default_epoch_budget_has_one_home():
    from dm_search.study.spec import StudySpec
    from dm_search.training.config import DEFAULT_EPOCHS, OptimConfig
    from dm_search.training.trainer import budget, total_epochs

    assert OptimConfig().epoch_budget == DEFAULT_EPOCHS
    assert OptimConfig(epochs=7).epoch_budget == 7
    assert OptimConfig(iterations=100).epoch_budget is None
    cfg = TrialConfig.from_dict({"optim": {"batch_size": 10}})
    assert budget(cfg, 100) == (10, 10, 10 * DEFAULT_EPOCHS)
    assert total_epochs(cfg, 100) == DEFAULT_EPOCHS
    spec = StudySpec.model_validate({"name": "s", "base": {}})
    assert spec.total_epochs() == DEFAULT_EPOCHS


def test_an_empty_config_file_is_an_error_not_all_defaults(tmp_path):
    (tmp_path / "c.yaml").write_text("\n")
    with pytest.raises(ConfigError, match=r"c.yaml is empty: give at least the sections"):
        load_trial_config(tmp_path / "c.yaml")
