"""Mean/std coordinates: quadrature against closed forms, inversion, reachable regions."""

from __future__ import annotations

import math

import pytest

from dm_search.edf import EDF, moments, names


@pytest.mark.parametrize("alpha, eta", [(0.5, 0.5), (2.0, 5.0), (0.05, 3.0), (30.0, 40.0),
                                        (1.0, 1.0), (0.3, 200.0)])
def test_beta_family_moments_match_the_closed_form(alpha, eta):
    edf = EDF("beta", alpha=alpha, eta=eta)
    s = alpha + eta
    assert edf.mean == pytest.approx(alpha / s, abs=1e-9)
    assert edf.std == pytest.approx(math.sqrt(alpha * eta / (s * s * (s + 1))), abs=1e-9)


@pytest.mark.parametrize("beta", [-40.0, -3.0, 0.5, 7.0, 200.0])
def test_exponential_moments_match_the_closed_form(beta):
    b = -beta  # density proportional to exp(b p) on [0, 1]
    mean = math.exp(b) / math.expm1(b) - 1 / b
    var = 1 / b**2 - math.exp(b) / math.expm1(b) ** 2
    edf = EDF("exponential", beta=beta)
    assert edf.mean == pytest.approx(mean, abs=1e-9)
    assert edf.std == pytest.approx(math.sqrt(var), abs=1e-9)


def test_fixed_families_and_gce_match_their_closed_forms():
    assert EDF("uniform").mean == pytest.approx(0.5, abs=1e-12)
    assert EDF("uniform").std == pytest.approx(1 / math.sqrt(12), abs=1e-12)
    assert EDF("cce").mean == pytest.approx(1 / 3, abs=1e-12)  # density 2 (1 - p)
    assert EDF("cce").std == pytest.approx(math.sqrt(1 / 18), abs=1e-12)
    assert EDF("mae").mean == pytest.approx(0.5, abs=1e-12)  # density 6 p (1 - p)
    assert EDF("mae").std == pytest.approx(math.sqrt(1 / 20), abs=1e-12)
    for q in (0.1, 0.7, 1.0):  # p^q (1 - p): mean (q + 1) / (q + 3)
        assert EDF("gce", q=q).mean == pytest.approx((q + 1) / (q + 3), abs=1e-12)


def test_a_sharp_dm_bump_is_integrated_accurately():
    # Large beta: w is a narrow bump at the mode, close to a Gaussian of variance
    # 1 / (beta * |second derivative of p^lam (1 - p)|) at the mode.
    edf = EDF("normal", psi=0.5, beta=500.0)
    assert edf.mean == pytest.approx(0.5, abs=1e-12)
    assert edf.std == pytest.approx(1 / math.sqrt(1000), abs=1e-6)


SAMPLES = {
    "dm": [dict(lam=1.0, beta=16.0), dict(lam=0.5, beta=8.0), dict(lam=2.0, beta=24.0),
           dict(lam=0.0, beta=3.0), dict(lam=4.0, beta=40.0)],
    "normal": [dict(psi=0.3, beta=16.0), dict(psi=0.9, beta=4.0), dict(psi=0.5, beta=60.0)],
    "beta": [dict(alpha=0.5, eta=3.0), dict(alpha=7.0, eta=2.0), dict(alpha=40.0, eta=30.0)],
    "exponential": [dict(beta=-3.0), dict(beta=12.0)],
    "gce": [dict(q=0.7), dict(q=0.2), dict(q=1.0)],
}


def test_every_family_is_covered_by_the_round_trip_tests():
    free = {f for f in names() if moments.has_moments(f) != "none"}
    assert free == set(SAMPLES)


@pytest.mark.parametrize("family, params",
                         [(f, p) for f, ps in SAMPLES.items() for p in ps])
def test_from_moments_inverts_mean_and_std(family, params):
    edf = EDF(family, **params)
    two = moments.has_moments(family) == "two"
    back = EDF.from_moments(family, mean=edf.mean, std=edf.std if two else None)
    assert back.family == family
    assert back.mean == pytest.approx(edf.mean, abs=1e-6)
    assert back.std == pytest.approx(edf.std, abs=1e-6)
    if family != "dm" or params["lam"] > 0:  # dm at lam 0: lam is only found to ~1e-8
        for k, v in params.items():
            assert back.params[k] == pytest.approx(v, rel=1e-3, abs=1e-6)


def test_an_unreachable_pair_says_what_is_reachable():
    with pytest.raises(ValueError) as err:
        EDF.from_moments("dm", mean=0.8, std=0.33)
    msg = str(err.value)
    assert "cannot reach mean 0.8, std 0.33" in msg
    assert "at mean 0.8 its std can be about" in msg and "dm-search edf describe dm" in msg
    with pytest.raises(ValueError, match=r"its mean can be about 0\.333 to 0\.500"):
        EDF.from_moments("gce", mean=0.9)
    with pytest.raises(ValueError, match=r"at mean 0\.45 its std is"):
        EDF.from_moments("gce", mean=0.45, std=0.01)
    with pytest.raises(ValueError, match="has no free parameters"):
        EDF.from_moments("cce", mean=0.3, std=0.2)
    with pytest.raises(ValueError, match="give both mean and std"):
        EDF.from_moments("dm", mean=0.5)


def test_nearest_clamps_to_the_boundary_and_reach_describes_the_region():
    edf = moments.nearest("dm", 0.8, 0.33)  # out of reach: the closest member instead
    assert abs(edf.mean - 0.8) < 0.05 and edf.std < 0.33
    region = moments.reach("dm")
    lo, hi = region.at(0.5) or (0, 0)
    assert lo < EDF("dm", lam=1.0, beta=16.0).std < hi
    assert region.at(1.5) is None
    assert "dm reaches mean" in region.describe()
