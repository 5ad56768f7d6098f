import math
import time

import pytest
import torch

from dm_search import EDF, DMLoss, EDFSchedule
from dm_search.edf.schedule import Ramp
from dm_search.training.config import ConfigError, TrialConfig

START = EDF("dm", lam=0.5, beta=8.0)  # mode 1/3
END = EDF("dm", lam=2.0, beta=16.0)  # mode 2/3


@pytest.mark.parametrize(("shape", "expected"), [
    ("linear", [0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ("cosine", [0.0, 0.0, 0.5 - 0.5 * math.cos(math.pi / 4), 0.5,
                0.5 + 0.5 * math.cos(math.pi / 4), 1.0, 1.0]),
    ("step", [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]),
])
def test_ramp_fraction_by_shape(shape, expected):
    ramp = Ramp(shape, 0.2, 0.6)
    got = [ramp.fraction(p) for p in (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0)]
    assert got == pytest.approx(expected)


def test_a_ramp_of_no_length_is_a_switch_at_that_point():
    ramp = Ramp("linear", 0.5, 0.5)
    assert [ramp.fraction(p) for p in (0.49, 0.5, 0.9)] == [0.0, 1.0, 1.0]


def test_schedule_moves_in_mode_and_spread_not_in_raw_parameters():
    s = EDFSchedule(START, END)
    assert s.at(0.0) == START and s.at(1.0) == END
    mid = s.at(0.5)
    assert mid.mode == pytest.approx(0.5) and mid.spread == pytest.approx(12.0)
    # lam itself is not the midpoint of 0.5 and 2: the mode is.
    assert mid.params["lam"] == pytest.approx(1.0)
    assert [round(e.mode, 6) for e in s.path(3)] == [round(1 / 3, 6), 0.5, round(2 / 3, 6)]


def test_schedule_in_moments_moves_the_mean_and_std():
    s = EDFSchedule(START, END, coords="moments")
    mid = s.at(0.5)
    assert mid.mean == pytest.approx((START.mean + END.mean) / 2, abs=1e-4)
    assert mid.std == pytest.approx((START.std + END.std) / 2, abs=1e-4)


def test_one_coordinate_families_move_their_mode():
    s = EDFSchedule(EDF("gce", q=0.25), EDF("gce", q=1.0), {"shape": "linear"})
    assert s.at(0.5).mode == pytest.approx((0.2 + 0.5) / 2)


def test_a_member_without_mode_takes_the_other_ends_mode():
    s = EDFSchedule(EDF("dm", lam=1.0, beta=0.0), EDF("dm", lam=1.0, beta=16.0))
    assert s.at(0.25).mode == pytest.approx(0.5) and s.at(0.25).spread == pytest.approx(4.0)


@pytest.mark.parametrize(("start", "end", "match"), [
    (START, EDF("gce", q=0.7), r"within one family.*'dm'.*'gce'"),
    (EDF("cce"), EDF("cce"), r"'cce' has no parameters"),
    (EDF("exponential", beta=2.0), EDF("exponential", beta=-2.0), r"spread, not its mode"),
])
def test_schedules_that_cannot_move_are_refused(start, end, match):
    with pytest.raises(ValueError, match=match):
        EDFSchedule(start, end)


def test_bad_ramps_are_refused():
    with pytest.raises(ValueError, match="after its end"):
        Ramp("linear", 0.7, 0.3)
    with pytest.raises(ValueError, match="linear, cosine, step"):
        Ramp("sigmoid")
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        Ramp("linear", 0.0, 1.5)


def test_config_round_trip():
    s = EDFSchedule(START, END, {"shape": "cosine", "start": 0.1, "end": 0.9})
    assert EDFSchedule.from_config(s.to_config()) == s
    with pytest.raises(ValueError, match="needs edf_end"):
        EDFSchedule.from_config({"edf": START.to_config()})


def test_scheduled_loss_refuses_to_run_before_it_is_told_the_progress():
    loss_fn = DMLoss(EDFSchedule(START, END))
    logits, target = torch.randn(8, 10, requires_grad=True), torch.randint(0, 10, (8,))
    with pytest.raises(RuntimeError, match=r"set_step\(step, total_steps\)"):
        loss_fn(logits, target)
    with pytest.raises(ValueError, match="progress"):
        loss_fn.set_progress(float("nan"))
    with pytest.raises(RuntimeError, match="fixed EDF"):
        DMLoss(START).set_progress(0.5)


def test_scheduled_loss_gives_the_gradient_of_the_edf_in_force():
    torch.manual_seed(0)
    logits, target = torch.randn(64, 10), torch.randint(0, 10, (64,))
    sched = DMLoss(EDFSchedule(START, END, {"shape": "cosine"}))
    for progress in (0.0, 0.3, 0.5, 1.0, 1.7):
        edf = sched.set_progress(progress)
        assert sched.edf is edf and edf == sched.schedule.at(min(progress, 1.0))
        a = logits.clone().requires_grad_()
        sched(a, target).backward()
        b = logits.clone().requires_grad_()
        DMLoss(edf)(b, target).backward()
        assert torch.equal(a.grad, b.grad)
    assert sched.set_step(50, 100) == sched.schedule.at(0.5)
    assert sched.set_progress(1.7) == END  # past the budget it stays at the end


def test_scheduled_loss_from_a_config_dict():
    loss_fn = DMLoss({"edf": START.to_config(), "edf_end": END.to_config()})
    assert loss_fn.schedule == EDFSchedule(START, END)
    assert "schedule=" in repr(loss_fn)


def test_moving_the_emphasis_is_cheap():
    loss_fn = DMLoss(EDFSchedule(START, END))
    n = 2000
    t0 = time.perf_counter()
    for step in range(n):
        loss_fn.set_step(step, n)
    per_step = (time.perf_counter() - t0) / n
    # A step of the smallest model here takes milliseconds; the move must not show in it.
    assert per_step < 2e-4, per_step


def test_moments_schedule_solves_a_bounded_number_of_members():
    s = EDFSchedule(START, END, coords="moments")
    for step in range(5000):
        s.at(step / 5000)
    assert len(s._cache) <= 201


def test_trial_config_schedule_fields():
    cfg = TrialConfig.from_dict({"loss": {"edf": START.to_config(),
                                          "edf_end": END.to_config()}})
    assert cfg.loss.ramp is not None and cfg.loss.ramp.shape == "linear"
    assert cfg.loss.build_schedule() == EDFSchedule(START, END)
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg
    assert TrialConfig().loss.build_schedule() is None
    for loss, match in [
        ({"ramp": {"shape": "step"}}, r"loss: .*give edf_end"),
        ({"edf_end": {"family": "gce"}}, r"loss: .*within one family"),
        ({"edf_end": {"family": "dm"}, "ramp": {"start": 0.9, "end": 0.1}},
         r"loss\.ramp: .*start \(0\.9\) is after end \(0\.1\)"),
    ]:
        with pytest.raises(ConfigError, match=match):
            TrialConfig.from_dict({"loss": loss})


def test_coords_may_come_with_the_ramp_as_in_a_trial_config():
    s = EDFSchedule(START, END, {"shape": "linear", "coords": "moments"})
    assert s.coords == "moments" and s.at(0.5) == EDFSchedule(START, END, "linear",
                                                              coords="moments").at(0.5)
    with pytest.raises(ValueError, match="coords given twice"):
        EDFSchedule(START, END, {"coords": "moments"}, coords="mode_spread")
    with pytest.raises(ValueError, match="coords must be one of mode_spread, moments"):
        EDFSchedule(START, END, {"coords": "bogus"})
    with pytest.raises(ValueError, match="unknown: strat"):
        EDFSchedule(START, END, {"strat": 0.2})
    with pytest.raises(ValueError, match="ramp is a Ramp, a mapping"):
        EDFSchedule(START, END, 3)


def test_edfs_may_be_given_as_configs_and_the_ramp_as_a_shape():
    s = EDFSchedule(START.to_config(), END.to_config(), "cosine")
    assert s == EDFSchedule(START, END, Ramp("cosine"))


def test_an_end_inherits_the_parameters_it_leaves_out_from_the_start():
    cfg = TrialConfig.from_dict({"loss": {"edf": {"family": "dm", "lam": 0.5, "beta": 16.0},
                                          "edf_end": {"family": "dm", "lam": 2.0}}})
    assert cfg.loss.edf_end == {"family": "dm", "lam": 2.0, "beta": 16.0}
    # another family takes nothing from the start (and is refused for being another family)
    with pytest.raises(ConfigError, match="within one family"):
        TrialConfig.from_dict({"loss": {"edf_end": {"family": "normal"}}})
