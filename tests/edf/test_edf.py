import json
import math

import pytest
import torch
import yaml

from dm_search import EDF
from dm_search import edf as edf_mod

# Several parameter settings per family, so every registered family is covered and the
# registry test below fails when a family is added without cases here.
CASES: dict[str, list[dict[str, float]]] = {
    "dm": [{"lam": 0.5, "beta": 8.0}, {"lam": 0.0, "beta": 2.0}, {"lam": 2.0, "beta": 16.0}],
    "normal": [{"psi": 0.5, "beta": 4.0}, {"psi": 0.9, "beta": 20.0}, {"psi": 0.0, "beta": 1.0}],
    "exponential": [{"beta": 2.0}, {"beta": -0.5}],
    "beta": [{"alpha": 2.0, "eta": 3.0}, {"alpha": 1.0, "eta": 2.0}, {"alpha": 5.0, "eta": 1.0}],
    "cce": [{}],
    "mae": [{}],
    "mse": [{}],
    "gce": [{"q": 0.7}, {"q": 0.2}, {"q": 1.0}],
    "uniform": [{}],
}
ALL = [(family, params) for family, cases in CASES.items() for params in cases]
IDS = [f"{f}-{'-'.join(f'{k}{v:g}' for k, v in p.items())}" for f, p in ALL]


def test_every_registered_family_has_test_cases():
    assert set(CASES) == set(edf_mod.names())


@pytest.mark.parametrize(("family", "params"), ALL, ids=IDS)
def test_weights_are_finite_and_non_negative(family, params):
    edf = EDF(family, **params)
    p = torch.linspace(0, 1, 1001, dtype=torch.float64)
    w = edf.weight(p)
    assert w.shape == p.shape
    assert torch.isfinite(w).all()
    assert (w >= 0).all()
    torch.testing.assert_close(edf.log_weight(p[1:-1]).exp(), w[1:-1])


@pytest.mark.parametrize(("family", "params"), ALL, ids=IDS)
def test_mode_is_the_argmax_on_a_fine_grid(family, params):
    edf = EDF(family, **params)
    p = torch.linspace(0, 1, 100_001, dtype=torch.float64)
    w = edf.weight(p)
    if edf.mode is None:
        torch.testing.assert_close(w, torch.full_like(w, float(w[0])))
        return
    assert 0.0 <= edf.mode <= 1.0
    assert abs(float(p[w.argmax()]) - edf.mode) <= 2e-5


@pytest.mark.parametrize(("family", "params"), ALL, ids=IDS)
def test_config_round_trip_is_lossless_and_json_yaml_safe(family, params):
    edf = EDF(family, **params)
    cfg = edf.to_config()
    assert cfg["family"] == family
    assert EDF.from_config(cfg) == edf
    assert EDF.from_config(json.loads(json.dumps(cfg))) == edf
    assert EDF.from_config(yaml.safe_load(yaml.safe_dump(cfg))) == edf


@pytest.mark.parametrize(("family", "params"), ALL, ids=IDS)
def test_weight_keeps_shape_and_dtype(family, params):
    edf = EDF(family, **params)
    p = torch.rand(3, 4, 5, dtype=torch.float32) * 0.98 + 0.01
    assert edf.weight(p).shape == (3, 4, 5)
    assert edf.weight(p).dtype == torch.float32


def test_to_config_is_the_flat_dict_of_the_paper_names():
    assert EDF("dm", lam=0.5, beta=8.0).to_config() == {"family": "dm", "lam": 0.5, "beta": 8.0}
    assert EDF("cce").to_config() == {"family": "cce"}
    assert EDF("gce", q=0.7).params == {"q": 0.7}


@pytest.mark.parametrize(
    ("family", "mode", "spread", "expected"),
    [
        ("dm", 1 / 3, 12.0, {"lam": 0.5, "beta": 12.0}),
        ("dm", 0.5, 16.0, {"lam": 1.0, "beta": 16.0}),
        ("dm", 0.0, 2.0, {"lam": 0.0, "beta": 2.0}),
        ("normal", 0.7, 5.0, {"psi": 0.7, "beta": 5.0}),
        ("exponential", 0.0, 3.0, {"beta": 3.0}),
        ("exponential", 1.0, 3.0, {"beta": -3.0}),
        ("beta", 0.25, 4.0, {"alpha": 2.0, "eta": 4.0}),
        ("gce", 0.7 / 1.7, None, {"q": 0.7}),
    ],
)
def test_from_mode_spread(family, mode, spread, expected):
    edf = EDF.from_mode_spread(family, mode=mode, spread=spread)
    assert edf.family == family
    for k, v in expected.items():
        assert edf.params[k] == pytest.approx(v)
    assert edf.mode == pytest.approx(mode)
    if spread is not None:
        assert edf.spread == pytest.approx(spread)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: EDF("nope"), r"Unknown EDF family 'nope'.*beta, cce, dm"),
        (lambda: EDF("dm", lam=-1.0, beta=8.0), r"'lam'=-1.0 is outside.*\[0, inf\)"),
        (lambda: EDF("dm", lam=0.5, beta=float("nan")), r"'beta'=nan is outside"),
        (lambda: EDF("dm", lam=0.5, beta=float("inf")), r"'beta'=inf is outside"),
        (lambda: EDF("dm", lam="big"), r"'lam' must be a number"),
        (lambda: EDF("dm", lamda=0.5), r"unknown parameter\(s\) lamda; its parameters are: "
         r"beta, lam"),
        (lambda: EDF("gce", q=0.0), r"'q'=0.0 is outside the allowed range \(0, 1\]"),
        (lambda: EDF("normal", psi=1.5), r"'psi'=1.5 is outside"),
        (lambda: EDF("beta", alpha=0.0), r"'alpha'=0.0 is outside"),
        (lambda: EDF("cce", beta=1.0), r"'cce' got unknown parameter\(s\) beta.*none"),
        (lambda: EDF.from_mode_spread("dm", mode=1.0, spread=2.0), r"mode must be < 1"),
        (lambda: EDF.from_mode_spread("dm", mode=0.5), r"needs a spread"),
        (lambda: EDF.from_mode_spread("exponential", mode=0.5, spread=1.0), r"must be 0 or 1"),
        (lambda: EDF.from_mode_spread("cce", mode=0.0), r"no \(mode, spread\) coordinates"),
        (lambda: EDF.from_mode_spread("dm", mode=-0.1, spread=1.0), r"'mode'=-0.1 is outside"),
        (lambda: EDF.from_config({"lam": 0.5}), r"'family' key"),
    ],
)
def test_bad_input_says_what_is_allowed(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_special_cases_of_the_dm_family():
    p = torch.linspace(0, 1, 101, dtype=torch.float64)
    # lam = 0 is the exponential family; beta = 0 is uniform.
    torch.testing.assert_close(
        EDF("dm", lam=0.0, beta=3.0).weight(p), EDF("exponential", beta=3.0).weight(p)
    )
    torch.testing.assert_close(EDF("dm", lam=1.0, beta=0.0).weight(p), torch.ones_like(p))
    assert EDF("dm", lam=1.0, beta=0.0).mode is None
    # dm is exp of beta(alpha = lam + 1, eta = 2) times beta.
    b = EDF("beta", alpha=1.5, eta=2.0).weight(p)
    torch.testing.assert_close(EDF("dm", lam=0.5, beta=4.0).weight(p), torch.exp(4.0 * b))


def test_loss_families_match_their_closed_forms():
    p = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(EDF("cce").weight(p), 2 * (1 - p))
    torch.testing.assert_close(EDF("mae").weight(p), 2 * p * (1 - p))
    torch.testing.assert_close(EDF("mse").weight(p), 4 * p * (1 - p) ** 2)
    torch.testing.assert_close(EDF("gce", q=0.3).weight(p), 2 * p**0.3 * (1 - p))


def test_beta_family_with_exponents_below_one_peaks_at_the_unbounded_end():
    assert EDF("beta", alpha=0.5, eta=2.0).mode == 0.0
    assert EDF("beta", alpha=2.0, eta=0.5).mode == 1.0
    assert math.isinf(float(EDF("beta", alpha=0.5, eta=2.0).weight(torch.tensor(0.0))))


def test_spec_string():
    assert edf_mod.from_spec_string("dm:lam=0.5,beta=8") == EDF("dm", lam=0.5, beta=8.0)
    assert edf_mod.from_spec_string("cce") == EDF("cce")
    with pytest.raises(ValueError, match="expected key=value"):
        edf_mod.from_spec_string("dm:lam")
    with pytest.raises(ValueError, match="not a number"):
        edf_mod.from_spec_string("dm:lam=x")


def test_registering_a_new_family_is_one_decorated_class():
    @edf_mod.register("_test_linear")
    class Linear(EDF):
        param_specs = (edf_mod.ParamSpec("slope", 1.0, 0.0),)

        def _log_weight(self, log_p, log_1mp):
            return torch.log1p(self._params["slope"] * log_p.exp())

        def _mode(self):
            return 1.0

    try:
        edf = EDF("_test_linear", slope=2.0)
        assert isinstance(edf, Linear)
        assert float(edf.weight(torch.tensor(1.0))) == pytest.approx(3.0)
        with pytest.raises(ValueError, match="already registered"):
            edf_mod.register("_test_linear")(Linear)
    finally:
        edf_mod.base._REGISTRY.unregister("_test_linear")
