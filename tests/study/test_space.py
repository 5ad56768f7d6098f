import optuna
import pytest

from dm_search.edf import EDF
from dm_search.study.space import grid_points, make_sampler, make_space, warm_start_points
from dm_search.study.spec import StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _spec(**kw):
    data = {"name": "s", "base": {"data": {"name": "mnist1d"}, "optim": {"epochs": 10}}}
    data.update(kw)
    return StudySpec.model_validate(data)


def _ask(spec, n=40, seed=0):
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    space = make_space(spec)
    out = []
    for _ in range(n):
        trial = study.ask()
        cfg = space(trial)["trial_config"]
        out.append((trial.params, cfg))
        study.tell(trial, 0.5)
    return out


def test_family_is_categorical_and_parameters_are_conditional():
    spec = _spec(space={"families": {"dm": {"mode": [0.1, 0.6], "spread": [2, 20]},
                                     "normal": {}, "gce": {}}})
    seen = set()
    for params, cfg in _ask(spec):
        family = params["family"]
        seen.add(family)
        assert cfg["loss"]["edf"]["family"] == family
        if family == "dm":
            assert set(params) == {"family", "dm.mode", "dm.spread"}
            edf = EDF.from_config(cfg["loss"]["edf"])
            assert edf.mode == pytest.approx(params["dm.mode"])
            assert cfg["loss"]["edf"]["lam"] == pytest.approx(
                params["dm.mode"] / (1 - params["dm.mode"]), rel=1e-9)
            assert cfg["loss"]["edf"]["beta"] == params["dm.spread"]
            assert 0.1 <= params["dm.mode"] <= 0.6 and 2 <= params["dm.spread"] <= 20
            assert cfg["loss"]["normalise"] == "batch" and cfg["loss"]["eps"] == 5e-7
        elif family == "gce":
            assert set(params) == {"family", "gce.mode"}
            # the loss-equivalent families run as the plain loss
            assert cfg["loss"]["normalise"] == "none" and cfg["loss"]["eps"] == 0.0
        else:
            assert set(params) == {"family", "normal.mode", "normal.spread"}
    assert seen == {"dm", "normal", "gce"}


def test_mean_std_coordinates_map_to_the_member_with_those_moments():
    spec = _spec(space={"families": {"dm": {"mean": [0.3, 0.6], "std": [0.15, 0.25]},
                                     "gce": {"mean": [0.4, 0.48]}}})
    seen = set()
    for params, cfg in _ask(spec, n=16):
        edf = EDF.from_config(cfg["loss"]["edf"])
        seen.add(edf.family)
        if edf.family == "dm":
            assert set(params) == {"family", "dm.mean", "dm.std"}
            assert edf.mean == pytest.approx(params["dm.mean"], abs=1e-6)
            assert edf.std == pytest.approx(params["dm.std"], abs=1e-6)
        else:
            assert set(params) == {"family", "gce.mean"}
            assert edf.mean == pytest.approx(params["gce.mean"], abs=1e-6)
    assert seen == {"dm", "gce"}


def test_out_of_reach_pairs_train_the_nearest_member():
    # the corner (0.75, 0.29) is out of dm's reach; the search trains the closest member
    spec = _spec(space={"families": {"dm": {"mean": 0.75, "std": [0.2, 0.29]}}})
    for params, cfg in _ask(spec, n=6):
        edf = EDF.from_config(cfg["loss"]["edf"])
        assert abs(edf.mean - 0.75) < 0.02 and edf.std <= params["dm.std"] + 1e-6


def test_other_hyperparameters_by_dotted_path():
    spec = _spec(space={"families": {"dm": {}},
                        "params": {"optim.lr": {"low": 0.01, "high": 0.1, "log": True},
                                   "optim.batch_size": {"choices": [32, 64]},
                                   "model.options.width": {"low": 8, "high": 16}}})
    for params, cfg in _ask(spec, n=10):
        assert "family" not in params  # one family: nothing to choose
        assert 0.01 <= cfg["optim"]["lr"] <= 0.1
        assert cfg["optim"]["batch_size"] in (32, 64)
        assert isinstance(cfg["model"]["options"]["width"], int)


def test_fixed_values_are_not_searched():
    spec = _spec(space={"families": {"exponential": {"spread": 3.0}}})
    params, cfg = _ask(spec, n=1)[0]
    assert params == {}
    assert cfg["loss"]["edf"] == {"family": "exponential", "beta": 3.0}


def test_grid_points_reproduce_the_listed_edfs():
    spec = _spec(space={"families": {"dm": {"mode": [0, 0.7], "spread": [0.5, 24]},
                                     "gce": {}},
                        "grid": [{"family": "dm", "lam": 0.5, "beta": 8.0},
                                 {"family": "gce", "q": 0.5}]},
                 sampler={"name": "grid"}, n_trials=2)
    study = optuna.create_study(direction="maximize")
    for p in grid_points(spec):
        study.enqueue_trial(p)
    space = make_space(spec)
    got = []
    for _ in range(2):
        t = study.ask()
        got.append(space(t)["trial_config"]["loss"]["edf"])
        study.tell(t, 0.1)
    assert got[0] == {"family": "dm", "lam": 0.5, "beta": 8.0}
    assert got[1] == {"family": "gce", "q": pytest.approx(0.5)}


def test_grid_family_must_be_in_the_space():
    spec = _spec(space={"families": {"dm": {}}, "grid": [{"family": "gce", "q": 0.5}]},
                 sampler={"name": "grid"}, n_trials=1)
    with pytest.raises(ValueError, match=r"not in space\.families"):
        grid_points(spec)


def test_warm_start_keeps_paper_points_inside_the_space():
    spec = _spec(space={"families": {"dm": {"mode": [0.0, 0.6], "spread": [1, 20]},
                                     "gce": {}}})
    points = warm_start_points(spec)
    assert {"family": "dm", "dm.mode": pytest.approx(1 / 3), "dm.spread": 8.0} in points
    assert {"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0} in points
    assert not any(p.get("dm.mode", 0) > 0.6 for p in points)  # lam 2 is outside
    assert {"family": "gce", "gce.mode": pytest.approx(0.7 / 1.7)} in points
    assert not any(p.get("family") == "cce" for p in points)  # CE is a baseline


@pytest.mark.parametrize("name", ["tpe", "cmaes", "qmc", "random", "grid"])
def test_samplers_and_reseeding(name):
    spec = _spec(sampler={"name": name, "seed": 3}, space={"families": {"dm": {}},
                                                           "grid": [{"family": "dm"}]})
    assert isinstance(make_sampler(spec), optuna.samplers.BaseSampler)
    first = [p for p, _ in _ask_with(spec, make_sampler(spec))]
    again = [p for p, _ in _ask_with(spec, make_sampler(spec))]
    shifted = [p for p, _ in _ask_with(spec, make_sampler(spec, seed_offset=5))]
    assert first == again
    if name != "qmc":  # a scrambled QMC sequence depends on its seed too, but may coincide
        assert first != shifted


def _ask_with(spec, sampler, n=3):
    study = optuna.create_study(direction="maximize", sampler=sampler)
    space = make_space(spec)
    out = []
    for _ in range(n):
        t = study.ask()
        cfg = space(t)
        out.append((t.params, cfg))
        study.tell(t, 0.1)
    return out


def test_a_scheduled_family_searches_where_the_emphasis_ends_and_how_it_moves():
    spec = _spec(space={"families": {"dm": {"mode": [0.0, 0.75], "spread": [4, 24],
                                            "mode_end": [0.0, 0.75],
                                            "ramp": ["linear", "cosine"],
                                            "ramp_end": [0.5, 1.0]}}})
    shapes = set()
    for params, cfg in _ask(spec, n=30):
        assert set(params) == {"dm.mode", "dm.spread", "dm.mode_end", "dm.ramp",
                               "dm.ramp_end"}
        loss = cfg["loss"]
        start, end = EDF.from_config(loss["edf"]), EDF.from_config(loss["edf_end"])
        assert start.mode == pytest.approx(params["dm.mode"])
        assert end.mode == pytest.approx(params["dm.mode_end"])
        assert end.spread == start.spread == params["dm.spread"]  # no spread_end: it stays
        assert loss["ramp"] == {"shape": params["dm.ramp"], "start": 0.0,
                                "end": params["dm.ramp_end"], "coords": "mode_spread"}
        shapes.add(params["dm.ramp"])
    assert shapes == {"linear", "cosine"}


def test_a_schedule_in_mean_std_ends_at_the_member_with_those_moments():
    spec = _spec(space={"families": {"dm": {"mean": [0.3, 0.6], "std": [0.15, 0.25],
                                            "mean_end": [0.3, 0.6]}}})
    for params, cfg in _ask(spec, n=6):
        end = EDF.from_config(cfg["loss"]["edf_end"])
        assert end.mean == pytest.approx(params["dm.mean_end"], abs=2e-3)
        assert end.std == pytest.approx(params["dm.std"], abs=2e-3)
        assert cfg["loss"]["ramp"]["coords"] == "moments"


def test_warm_start_in_a_scheduled_family_runs_the_paper_points_as_fixed_edfs():
    spec = _spec(space={"families": {"dm": {"mode": [0.0, 0.75], "spread": [4, 24],
                                            "mode_end": [0.4, 0.75]}}})
    points = warm_start_points(spec)
    # lam 0.5 (mode 1/3) cannot end where it starts inside mode_end [0.4, 0.75]
    assert [(p["dm.mode"], p["dm.spread"]) for p in points] == [(0.5, 16.0), (2 / 3, 16.0)]
    assert all(p["dm.mode_end"] == p["dm.mode"] for p in points)
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(points[0])
    cfg = make_space(spec)(study.ask())["trial_config"]
    assert "edf_end" not in cfg["loss"] or cfg["loss"]["edf_end"] is None
    assert cfg["loss"]["edf"] == {"family": "dm", "lam": 1.0, "beta": 16.0}


def test_family_budget_shares_trials_by_searched_coordinates_and_tpe_picks_inside():
    """A sampler that likes the one-parameter family cannot starve the two-parameter one: dm
    (mode, spread) gets two thirds of the searched trials, gce (mode) one third."""
    from dm_search.study.space import family_dims, family_due

    spec = _spec(space={"families": {"dm": {}, "gce": {}}})
    assert family_dims(spec, "dm") == 2 and family_dims(spec, "gce") == 1
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2))
    space = make_space(spec)
    for _ in range(30):
        due = family_due(spec, study)
        if due is not None:
            study.enqueue_trial({"family": due})
        trial = study.ask()
        cfg = space(trial)["trial_config"]
        assert due is None or trial.params["family"] == due
        # gce scores best everywhere: left alone, TPE would settle on it
        study.tell(trial, 0.9 if trial.params["family"] == "gce" else 0.5)
        assert cfg["loss"]["edf"]["family"] == trial.params["family"]
    fams = [t.params["family"] for t in study.trials]
    assert abs(fams.count("dm") - 20) <= 1 and abs(fams.count("gce") - 10) <= 1
    dm_modes = {round(t.params["dm.mode"], 6) for t in study.trials if "dm.mode" in t.params}
    assert len(dm_modes) == fams.count("dm")  # the points inside dm are still searched

    # queued points (warm start) run first; the sampler alone when asked to
    study.enqueue_trial({"family": "gce", "gce.mode": 0.3})
    assert family_due(spec, study) is None
    free = _spec(space={"families": {"dm": {}, "gce": {}}, "family_budget": "sampler"})
    assert family_due(free, optuna.create_study()) is None
    assert family_due(_spec(), optuna.create_study()) is None  # one family: nothing to share
