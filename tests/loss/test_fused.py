"""The fused DM loss (DMLoss(compile=True)): what the shared loss tests cannot see, namely
when it compiles, and that one kernel serves every EDF. test_loss.py runs the gradient
contract itself on both paths."""

import math
import warnings

import pytest
import torch

from dm_search import EDF, DMLoss
from dm_search.edf import EDFSchedule, register
from dm_search.edf.base import _REGISTRY
from dm_search.edf.schedule import Ramp
from dm_search.loss import fused
from tests.edf.test_edf import ALL, IDS


@pytest.mark.parametrize(("family", "params"), ALL, ids=IDS)
def test_every_family_is_its_canonical_form(family, params):
    edf = EDF(family, **params)
    p = torch.cat([torch.logspace(-12, 0, 200, dtype=torch.float64)[:-1],
                   1 - torch.logspace(-12, -1e-3, 200, dtype=torch.float64)])
    log_p, log_1mp = torch.log(p), torch.log1p(-p)
    coef = torch.tensor(edf.coefficients(), dtype=torch.float64)
    torch.testing.assert_close(fused.log_weight(log_p, log_1mp, coef),
                               edf.log_weight_from_logs(log_p, log_1mp), rtol=1e-12, atol=1e-12)


def _grads(loss_fn, z, y):
    x = z.clone().requires_grad_()
    loss_fn(x, y).backward()
    return x.grad


@pytest.mark.slow  # compiles the kernel for several batch sizes: seconds
def test_an_epoch_compiles_once_per_batch_size_and_edfs_share_the_kernel():
    g = torch.Generator().manual_seed(0)
    data = torch.randn(74, 6, generator=g, dtype=torch.float32)
    labels = torch.randint(0, 6, (74,), generator=g)
    schedule = EDFSchedule(EDF("dm", lam=0.25, beta=4.0), EDF("dm", lam=1.0, beta=16.0),
                           Ramp("linear", 0.0, 1.0))
    fused_fn, eager_fn = DMLoss(schedule, compile=True), DMLoss(schedule)
    before = fused.compiled_kernels()
    steps = 3 * 3  # three epochs of batches 32, 32 and the short 10
    for step in range(steps):
        i = (step % 3) * 32
        z, y = data[i:i + 32], labels[i:i + 32]
        for fn in (fused_fn, eager_fn):
            fn.set_step(step, steps)
        torch.testing.assert_close(_grads(fused_fn, z, y), _grads(eager_fn, z, y),
                                   rtol=1e-5, atol=1e-8)
    # two batch sizes: two kernels, whatever the EDF did; another family reuses them
    assert fused.compiled_kernels() - before == 2
    other = DMLoss(EDF("normal", psi=0.7, beta=5.0), compile=True, eps=0.0)
    torch.testing.assert_close(_grads(other, data[:32], labels[:32]),
                               _grads(DMLoss(EDF("normal", psi=0.7, beta=5.0), eps=0.0),
                                      data[:32], labels[:32]), rtol=1e-5, atol=1e-8)
    assert fused.compiled_kernels() - before == 2


@pytest.mark.slow
def test_many_batch_sizes_are_padded_into_few_kernels(monkeypatch):
    monkeypatch.setattr(fused, "MAX_SHAPES", 2)
    monkeypatch.setattr(fused, "_SIZES", {})
    edf = EDF("gce", q=0.7)
    g = torch.Generator().manual_seed(1)
    before = fused.compiled_kernels()
    for n in (3, 5, 9, 11, 13, 14):  # 3 and 5 exactly, then padded to 16
        z = torch.randn(n, 4, generator=g, dtype=torch.float64)
        y = torch.randint(0, 4, (n,), generator=g)
        for normalise in ("batch",):
            f = DMLoss(edf, compile=True, normalise=normalise)
            grad = _grads(f, z, y)
            assert grad.shape == (n, 4) and f.last_weights.shape == (n,)
            torch.testing.assert_close(grad, _grads(DMLoss(edf, normalise=normalise), z, y),
                                       rtol=1e-10, atol=1e-14)
            assert float(f.last_weights.sum()) == pytest.approx(1.0)
    assert fused.compiled_kernels() - before == 3


def test_a_family_without_the_fused_form_trains_eagerly_with_a_warning():
    @register("halfcce")
    class HalfCCE(EDF):
        description = "1 - p"

        def _log_weight(self, log_p, log_1mp):
            return log_1mp

        def _mode(self):
            return 0.0

    try:
        edf = EDF("halfcce")
        z = torch.randn(8, 3, dtype=torch.float64)
        y = torch.randint(0, 3, (8,))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            grad = _grads(DMLoss(edf, compile=True), z, y)
        assert any("no fused form" in str(w.message) for w in caught)
        torch.testing.assert_close(grad, _grads(DMLoss(edf), z, y), rtol=0, atol=0)
    finally:
        _REGISTRY.unregister("halfcce")


def test_repr_says_compiled():
    assert "compile=True" in repr(DMLoss(EDF("dm"), compile=True))
    assert "compile" not in repr(DMLoss(EDF("dm")))


def test_a_value_that_is_scaled_backpropagates_scaled():
    z = torch.randn(16, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (16,))
    f = DMLoss(EDF("dm"), compile=True)
    x = z.clone().requires_grad_()
    (f(x, y) * 0.25).backward()
    torch.testing.assert_close(x.grad, 0.25 * _grads(DMLoss(EDF("dm")), z, y),
                               rtol=1e-10, atol=1e-15)
    assert math.isfinite(float(f.last_weights.sum()))
