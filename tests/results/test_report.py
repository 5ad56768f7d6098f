import itertools

import pytest

from dm_search import EDF
from dm_search.results.curves import edf_curves_info, plot_edf_curves


def test_edf_curves_info_has_unit_area_and_modes():
    info = edf_curves_info([EDF("cce"), EDF("dm", lam=1.0, beta=12.0)], points=401)
    assert info.labels == ["cce", "dm(lam=1, beta=12)"]
    assert info.modes == [0.0, 0.5]
    step = info.p[1] - info.p[0]
    for w in info.weights:
        area = sum((a + b) / 2 * step for a, b in itertools.pairwise(w))
        assert area == pytest.approx(1.0, rel=1e-9)
    # cce scaled to unit area is 2 (1 - p).
    assert info.weights[0][0] == pytest.approx(2.0)


def test_raw_curves_are_w_of_p():
    info = edf_curves_info([EDF("mae")], points=5, normalise=False)
    assert info.weights[0] == pytest.approx([0.0, 0.375, 0.5, 0.375, 0.0])


def test_infinite_endpoints_are_dropped_not_plotted():
    info = edf_curves_info([EDF("beta", alpha=0.5, eta=2.0)], points=11)
    assert info.weights[0][0] != info.weights[0][0]  # NaN: a gap in the plot


def test_plot_draws_one_line_per_edf_and_a_mode_marker():
    info = edf_curves_info([EDF("cce"), EDF("uniform")])
    fig = plot_edf_curves(info)
    names = [t.name for t in fig.data if t.mode == "lines"]
    assert names == ["cce", "uniform"]
    assert sum(1 for t in fig.data if t.mode == "markers") == 1  # uniform has no mode
