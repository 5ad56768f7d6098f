import math

import pytest
import torch

from dm_search.training.config import ConfigError, TrialConfig
from dm_search.training.trainer import METRICS, TrialDiverged, augment, run_trial

TIMING = {"epoch_s", "samples_per_s"}


def _cfg(data_root, **overrides):
    base = {
        "data": {"name": "mnist1d", "num_samples": 600, "root": str(data_root),
                 "noise": {"kind": "symmetric", "rate": 0.4}},
        "model": {"name": "cnn1d", "options": {"width": 8}},
        "optim": {"epochs": 3, "batch_size": 64, "lr": 0.05},
        "threads": 1,
    }
    for key, value in overrides.items():
        node = base
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return TrialConfig.from_dict(base)


def _strip(history):
    return [{k: v for k, v in m.items() if k not in TIMING} for m in history]


def test_reports_every_metric_every_epoch(data_root):
    seen = []
    result = run_trial(_cfg(data_root), report=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2, 3]
    for m in seen:
        assert tuple(m) == METRICS
        for key in METRICS:
            assert math.isfinite(m[key]), key
        for key in ("val_acc", "test_acc", "intact_acc", "memorised", "p_clean", "p_noisy",
                    "noisy_weight_share"):
            assert 0.0 <= m[key] <= 1.0
    assert result.epochs_completed == 3
    assert result.num_train == 384 and 0.3 < result.noise_rate < 0.5
    assert result.best_val_acc == max(m["val_acc"] for m in seen)
    assert result.history[result.best_epoch - 1]["val_acc"] == result.best_val_acc
    assert result.to_dict()["config"]["loss"]["edf"]["family"] == "dm"
    # accuracies are exact fractions of the split, so they print as such (0.825, not 0.82499)
    n_val = 96  # 20% of the 480 examples
    for m in seen:
        assert m["val_acc"] == round(m["val_acc"] * n_val) / n_val


def test_same_seed_same_result_other_seed_other_result(data_root):
    a = run_trial(_cfg(data_root))
    b = run_trial(_cfg(data_root))
    c = run_trial(_cfg(data_root, seed=1))
    assert _strip(a.history) == _strip(b.history)
    assert _strip(a.history) != _strip(c.history)


def test_without_noise_noise_metrics_are_nan(data_root):
    r = run_trial(_cfg(data_root, **{"data.noise": {"kind": "none"}, "optim.epochs": 1}))
    assert math.isnan(r.final["memorised"]) and math.isnan(r.final["p_noisy"])
    assert math.isnan(r.final["noisy_weight_share"])
    assert r.noise_rate == 0.0


def test_diagnostics_measure_the_noisy_part(data_root):
    # Trained with plain CE long enough, the model fits clean labels far better than noisy ones.
    r = run_trial(_cfg(data_root, **{"loss": {"edf": {"family": "cce"}, "normalise": "none"},
                                     "optim.epochs": 8}))
    f = r.final
    assert f["p_clean"] > f["p_noisy"]
    assert f["intact_acc"] > f["memorised"]
    # CE without DN gives corrupted (low-p) examples more than their share of the weight.
    assert f["noisy_weight_share"] > r.noise_rate


SCHEDULED = {"edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
             "edf_end": {"family": "dm", "lam": 2.0, "beta": 16.0},
             "ramp": {"shape": "cosine", "start": 0.25, "end": 0.75}}


@pytest.mark.parametrize("loss", [None, SCHEDULED], ids=["fixed", "mid-ramp"])
def test_resume_from_checkpoint_is_bit_identical(data_root, tmp_path, loss):
    extra = {} if loss is None else {"loss": loss}
    straight = run_trial(_cfg(data_root, **{"optim.epochs": 4, **extra,
                                            "checkpoint": {"dir": str(tmp_path / "a")}}))

    class Crash(Exception):
        pass

    def crash_after_two(m):
        if m["epoch"] == 2:
            raise Crash

    cfg = _cfg(data_root, **{"optim.epochs": 4, **extra,
                             "checkpoint": {"dir": str(tmp_path / "b")}})
    with pytest.raises(Crash):
        run_trial(cfg, report=crash_after_two)
    saved = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)  # plain data
    assert saved["epoch"] == 2
    resumed_epochs = []
    resumed = run_trial(cfg, report=lambda m: resumed_epochs.append(m["epoch"]))
    assert resumed_epochs == [3, 4]
    assert _strip(resumed.history) == _strip(straight.history)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    if loss is not None:  # the crash fell in the middle of the ramp
        modes = [m["mode"] for m in straight.history]
        assert modes[0] < modes[1] < modes[2] and modes[2] == modes[3] == 2 / 3


def test_a_scheduled_trial_reports_its_emphasis_moving_every_epoch(data_root):
    fixed = run_trial(_cfg(data_root))
    assert {m["mode"] for m in fixed.history} == {1 / 3}
    assert {m["spread"] for m in fixed.history} == {8.0}
    loss = {**SCHEDULED, "ramp": {"shape": "linear"}}
    moving = run_trial(_cfg(data_root, **{"optim.epochs": 4, "loss": loss}))
    spreads = [m["spread"] for m in moving.history]
    assert spreads == pytest.approx([10.0, 12.0, 14.0, 16.0])
    modes = [m["mode"] for m in moving.history]
    assert modes == sorted(modes) and modes[-1] == pytest.approx(2 / 3)
    assert moving.config["loss"]["ramp"] == {"shape": "linear", "start": 0.0, "end": 1.0,
                                             "coords": "mode_spread"}
    # A step ramp is the fixed start EDF, then the fixed end EDF: the first half of its run
    # is the start EDF's run exactly. The mode is the one at the end of the epoch, where the
    # switch falls after epoch 2.
    step = run_trial(_cfg(data_root, **{"optim.epochs": 4,
                                        "loss": {**SCHEDULED, "ramp": {"shape": "step"}}}))
    start = run_trial(_cfg(data_root, **{"optim.epochs": 4, "loss": {"edf": SCHEDULED["edf"]}}))
    trained = [{k: v for k, v in m.items() if k not in ("mode", "spread")}
               for m in _strip(step.history[:2])]
    assert trained == [{k: v for k, v in m.items() if k not in ("mode", "spread")}
                       for m in _strip(start.history[:2])]
    assert [m["mode"] for m in step.history] == [1 / 3, 2 / 3, 2 / 3, 2 / 3]
    assert step.history[2]["train_loss"] != start.history[2]["train_loss"]


def test_a_checkpoint_written_before_a_config_field_existed_still_resumes(data_root, tmp_path):
    cfg = _cfg(data_root, **{"optim.epochs": 3, "checkpoint": {"dir": str(tmp_path)}})
    run_trial(_cfg(data_root, **{"optim.epochs": 2, "checkpoint": {"dir": str(tmp_path)}}))
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["config"] = cfg.to_dict()
    for key in ("edf_end", "ramp"):  # a config recorded before schedules had no such keys
        del state["config"]["loss"][key]
    state["epoch"] = 2
    torch.save(state, path)
    epochs = []
    run_trial(cfg, report=lambda m: epochs.append(m["epoch"]))
    assert epochs == [3]


def test_checkpoint_of_another_config_is_refused(data_root, tmp_path):
    run_trial(_cfg(data_root, **{"optim.epochs": 1, "checkpoint": {"dir": str(tmp_path)}}))
    with pytest.raises(ConfigError, match="different configuration"):
        run_trial(_cfg(data_root, **{"optim.epochs": 1, "optim.lr": 0.2,
                                     "checkpoint": {"dir": str(tmp_path)}}))


def test_a_checkpoint_that_would_run_code_is_refused_before_it_runs(
        data_root, tmp_path, hostile_pt):
    marker = hostile_pt(tmp_path / "checkpoint.pt")
    cfg = _cfg(data_root, **{"optim.epochs": 1, "checkpoint": {"dir": str(tmp_path)}})
    with pytest.raises(ConfigError, match=r"checkpoint .*checkpoint\.pt cannot be loaded safely "
                                          r".*unpickling can run code.*resume: false"):
        run_trial(cfg)
    assert not marker.exists()
    torch.load(tmp_path / "checkpoint.pt", weights_only=False).close()  # it is live
    assert marker.exists()


def test_a_damaged_checkpoint_is_refused_naming_it(data_root, tmp_path):
    cfg = _cfg(data_root, **{"optim.epochs": 1, "checkpoint": {"dir": str(tmp_path)}})
    run_trial(cfg)
    path = tmp_path / "checkpoint.pt"
    whole = path.read_bytes()
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    damaged = {
        b"": r"checkpoint\.pt is empty",
        whole[: len(whole) // 2]: r"checkpoint\.pt cannot be loaded safely",
        b"\x80\x02not a pickle at all": r"checkpoint\.pt cannot be loaded safely",
        (tmp_path / "foreign.pt").read_bytes(): r"checkpoint\.pt is not a dm-search trial "
                                                r"checkpoint \(no config, optimizer, ",
    }
    for content, match in damaged.items():
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=match + r".*checkpoint\.resume: false"):
            run_trial(cfg)


def test_divergence_stops_the_trial_with_the_epoch(data_root):
    cfg = _cfg(data_root, **{"optim.lr": 1e30, "optim.epochs": 2,
                             "loss": {"edf": {"family": "cce"}, "normalise": "none"}})
    with pytest.raises(TrialDiverged) as info:
        run_trial(cfg)
    assert info.value.epoch == 1
    assert "nan" in info.value.reason or "inf" in info.value.reason


def test_iteration_budget(data_root):
    # 384 training examples, batch 64: 6 steps per epoch; 14 iterations = 3 epochs (2 + 2 + 2).
    seen = []
    run_trial(_cfg(data_root, **{"optim.epochs": None, "optim.iterations": 14}),
              report=seen.append)
    assert len(seen) == 3


def test_augmentation_crops_and_flips_on_the_batch():
    g = torch.Generator().manual_seed(0)
    n = 64
    x = torch.arange(n * 3 * 8 * 8, dtype=torch.float32).reshape(n, 3, 8, 8)
    flipped = augment(x, 0, True, g)
    was_flipped = []
    for i in range(n):
        same, mirrored = torch.equal(flipped[i], x[i]), torch.equal(flipped[i], x[i].flip(2))
        assert same or mirrored
        was_flipped.append(mirrored)
    assert 16 < sum(was_flipped) < 48  # about half of the batch, not none and not all
    cropped = augment(x, 2, False, g)
    assert cropped.shape == x.shape
    shifts = set()
    for i in range(n):
        # every crop is a shifted window of the zero-padded image
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        found = [(dy, dx) for dy in range(5) for dx in range(5)
                 if torch.equal(cropped[i], padded[:, dy:dy + 8, dx:dx + 8])]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10  # many different windows, not the image itself every time
    signals = torch.randn(4, 1, 40)
    assert augment(signals, 4, True, g) is signals


def test_image_dataset_with_augmentation_trains(data_root):
    r = run_trial(TrialConfig.from_dict({
        "data": {"name": "digits", "noise": {"kind": "asymmetric", "rate": 0.3}},
        "model": {"name": "cnn2d", "options": {"width": 8}},
        "augment": {"crop_pad": 1, "flip": False},
        "optim": {"epochs": 6, "batch_size": 64, "lr": 0.2}, "threads": 1,
    }))
    assert r.epochs_completed == 6 and r.best_val_acc > 0.5


@pytest.mark.slow
def test_a_network_that_dies_is_a_failed_trial_with_its_reason(tmp_path):
    # Derivative normalisation at 5x the lr this EDF was validated with, no schedule: the
    # network collapses to chance; it must never pass for a poor but valid result.
    from dm_search.training.trainer import TrialCollapsed

    cfg = TrialConfig.from_dict({
        "data": {"name": "digits", "noise": {"kind": "symmetric", "rate": 0.4}},
        "model": {"name": "mlp"}, "loss": {"edf": {"family": "dm", "lam": 1.0, "beta": 20.0}},
        "optim": {"lr": 0.1, "schedule": "constant", "batch_size": 64, "epochs": 150}})
    seen = []
    with pytest.raises(TrialCollapsed, match=r"collapsed in epoch .* chance accuracy"):
        run_trial(cfg, report=seen.append)
    assert len(seen) < 150
    # the same EDF with the recipe it was validated with trains normally
    ok = run_trial(cfg.model_copy(update={"optim": cfg.optim.model_copy(
        update={"lr": 0.02, "schedule": "cosine", "epochs": 20})}))
    assert ok.final["test_acc"] > 0.5


@pytest.mark.slow
def test_a_compiled_trial_trains_like_an_eager_one_and_resumes_its_checkpoint(data_root, tmp_path):
    eager = run_trial(_cfg(data_root, checkpoint={"dir": str(tmp_path / "e")}))
    compiled_cfg = _cfg(data_root, compile=True, checkpoint={"dir": str(tmp_path / "c")})
    compiled = run_trial(compiled_cfg)
    assert compiled.to_dict()["config"]["compile"] is True
    # The same arithmetic in another order: equal up to rounding after three epochs
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
        assert abs(b["val_acc"] - a["val_acc"]) <= 2 / 96
    saved = torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod") for k in saved["model"])  # the model's own names
    # how a trial runs is not what it trains: an eager trial resumes the compiled checkpoint
    more = _cfg(data_root, **{"optim.epochs": 4, "checkpoint": {"dir": str(tmp_path / "c")}})
    with pytest.raises(ConfigError):  # a longer budget is another configuration...
        run_trial(more)
    resumed = run_trial(_cfg(data_root, checkpoint={"dir": str(tmp_path / "c")}))
    assert resumed.epochs_completed == 3 and len(resumed.history) == 3
