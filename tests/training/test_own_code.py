"""The user's own code in one trial: a training loop of their own (TrialContext and its
reports), model factories and dataset loaders by module:function and by entry point, and what
each says when it is wrong."""

from __future__ import annotations

import math
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dm_search.common import plugins
from dm_search.training import data as data_mod
from dm_search.training import models
from dm_search.training.config import ConfigError, TrialConfig, load_trial_config, read_yaml
from dm_search.training.context import ReportError, TrialStopped
from dm_search.training.trainer import check_config, run_trial

LOOP = '''
import math
import torch
from torch import nn

SEEN = {}


def train(trial):
    """A tiny loop of one's own: a linear model on trial.data, reporting every epoch."""
    d = trial.data
    SEEN.update(final=trial.final, params=trial.params, seed=trial.seed, epochs=trial.epochs,
                n_val=len(d.y_val), lr=trial.recipe.lr, device=str(trial.device),
                folder=trial.checkpoint_dir, folder_ok=trial.checkpoint_dir.is_dir(),
                modes=[])
    net = nn.Linear(d.x_train[0].numel(), d.num_classes)
    opt = trial.recipe.optimizer(net.parameters())
    x = d.x_train.flatten(1)
    for epoch in range(1, trial.epochs + 1):
        SEEN["modes"].append(trial.loss.edf.mode)
        loss = trial.loss(net(x), d.y_train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            val = (net(d.x_val.flatten(1)).argmax(1) == d.y_val).float().mean().item() \\
                if len(d.y_val) else math.nan
            test = (net(d.x_test.flatten(1)).argmax(1) == d.y_test).float().mean().item()
        trial.report(epoch=epoch, val_acc=val, test_acc=test, train_loss=loss.item(),
                     width=trial.params.get("width", 0))


def silent(trial):
    pass


def backwards(trial):
    trial.report(epoch=2, val_acc=0.5)
    trial.report(epoch=1, val_acc=0.5)


def percent(trial):
    trial.report(epoch=1, val_acc=87.0)


def nan_val(trial):
    trial.report(epoch=1, val_acc=float("nan"))


def too_long(trial):
    for e in range(1, trial.epochs + 2):
        trial.report(epoch=e, val_acc=0.5)


def raises(trial):
    trial.report(epoch=1, val_acc=0.5)
    raise KeyError("no such column: 'labels'")


def two_args(trial, other):
    pass


def error_metric(trial):
    trial.report(epoch=1, val_acc=0.5, error=0.5)


def from_zero(trial):
    trial.report(epoch=0, val_acc=0.5)


def raises_in_torch(trial):
    trial.report(epoch=1, val_acc=0.5)
    torch.zeros(2) @ torch.zeros(3)


class Pictures(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return "a PIL image", i % 2


def pictures():
    return Pictures(), Pictures()


def empty():
    return torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), torch.zeros(2, 3), \
        torch.zeros(2, dtype=torch.long)


def catches_everything(trial):
    for e in range(1, trial.epochs + 1):
        try:
            trial.report(epoch=e, val_acc=0.5)
        except Exception:
            pass


def make_net(*, input_shape, num_classes, width=4):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def not_a_module(*, input_shape, num_classes):
    return "a string"


def positional_only(shape):
    return None


def tensors(n=120, classes=3, length=6, bad=None):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.randn(n, length, generator=g) + y[:, None].float()
    out = {"x_train": x[:100], "y_train": y[:100], "x_test": x[100:], "y_test": y[100:]}
    if bad == "lengths":
        out["y_train"] = y[:90]
    elif bad == "labels":
        out["y_train"] = y[:100] + 5
        out["num_classes"] = classes
    elif bad == "ints":
        out["x_train"] = out["x_train"].long()
    elif bad == "shapes":
        out["x_test"] = torch.randn(20, length + 1)
    elif bad == "raise":
        raise FileNotFoundError("/data/signals.npz")
    return out


class Pairs(torch.utils.data.Dataset):
    def __init__(self, n, offset=0):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        y = (i + self.offset) % 3
        return torch.full((4,), float(y)) + 0.01 * i, y


def datasets():
    return Pairs(90), Pairs(30, offset=1)
'''


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A module of the user's own, ``own_code``, importable from the working directory."""
    (tmp_path / "own_code.py").write_text(LOOP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield sys.modules.setdefault("own_code", __import__("own_code"))
    sys.modules.pop("own_code", None)


def _cfg(trainer="own_code:train", **extra):
    base = {"data": {"name": "own_code:tensors"}, "trainer": trainer,
            "optim": {"epochs": 4, "batch_size": 32, "lr": 0.1}, "params": {"width": 7}}
    base.update(extra)
    return TrialConfig.from_dict(base)


def test_a_loop_of_ones_own_trains_on_the_specs_data_and_reports_through_the_context(own):
    seen = []
    r = run_trial(_cfg(), report=seen.append)
    assert [m["epoch"] for m in seen] == [1, 2, 3, 4] == [m["epoch"] for m in r.history]
    # The built-in loop's metrics it did not report are NaN; its own extras travel along.
    assert math.isnan(seen[0]["memorised"]) and seen[0]["width"] == 7.0
    assert all(0.0 <= m["val_acc"] <= 1.0 and m["epoch_s"] > 0 for m in seen)
    assert r.best_val_acc == max(m["val_acc"] for m in r.history)
    assert r.num_train == 80 and len(r.fingerprint) == 16
    s = own.SEEN
    assert s["final"] is False and s["params"] == {"width": 7} and s["epochs"] == 4
    assert s["n_val"] == 20 and s["lr"] == 0.1 and s["device"] == "cpu"
    # A folder of the run's own while it runs; a temporary one (no checkpoint.dir) is removed.
    assert s["folder_ok"] and not Path(s["folder"]).exists()
    # Reproducible from the seed, as the built-in loop is.
    again = run_trial(_cfg())
    assert [m["val_acc"] for m in again.history] == [m["val_acc"] for m in r.history]


def test_the_final_stage_hands_the_full_training_set_and_takes_test_accuracy_alone(own):
    cfg = _cfg(data={"name": "own_code:tensors", "val_fraction": 0.0})
    r = run_trial(cfg, final=True)
    assert own.SEEN["final"] is True and own.SEEN["n_val"] == 0
    assert all(math.isnan(m["val_acc"]) for m in r.history)  # allowed there
    assert math.isnan(r.best_val_acc) and r.test_acc_at_best == max(
        m["test_acc"] for m in r.history)


def test_an_emphasis_schedule_moves_at_each_report(own):
    cfg = _cfg(loss={"edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
                     "edf_end": {"lam": 2.0}})
    run_trial(cfg)
    modes = own.SEEN["modes"]
    assert modes[0] == pytest.approx(1 / 3) and modes == sorted(modes)
    assert len(set(modes)) == 4


def test_a_stopped_trial_leaves_the_loop_even_through_except_exception(own):
    def sink(m):
        if m["epoch"] == 2:
            raise TrialStopped

    r = run_trial(_cfg("own_code:catches_everything"), report=sink)
    assert [m["epoch"] for m in r.history] == [1, 2]  # the third report raised again
    r = run_trial(_cfg(), report=sink)
    assert r.epochs_completed == 2


@pytest.mark.parametrize("trainer, match", [
    ("own_code:silent", "returned without reporting an epoch"),
    ("own_code:backwards", r"epoch 1 reported after epoch 2"),
    ("own_code:percent", r"val_acc is 87.0; an accuracy is a fraction in \[0, 1\]"),
    ("own_code:nan_val", r"val_acc is nan"),
    ("own_code:too_long", r"epoch 5 is past the run's 4 epochs"),
    ("own_code:error_metric", r"'error' is a name the study uses itself"),
    ("own_code:from_zero", r"epochs are numbered from 1; got 0"),
])
def test_reports_the_study_cannot_record_are_refused_saying_why(own, trainer, match):
    with pytest.raises(ReportError, match=match):
        run_trial(_cfg(trainer))


def test_a_loop_that_raises_fails_with_its_own_error(own):
    with pytest.raises(KeyError) as info:
        run_trial(_cfg("own_code:raises"))
    line = plugins.describe_error(info.value)
    assert line.startswith("KeyError: \"no such column: 'labels'\" (")
    where = next(i for i, text in enumerate(LOOP.splitlines(), 1) if "raise KeyError" in text)
    assert line.endswith(f"own_code.py:{where})")
    # Raised inside torch: the line of the user's code that called it, not torch's.
    with pytest.raises(RuntimeError) as info:
        run_trial(_cfg("own_code:raises_in_torch"))
    where = next(i for i, text in enumerate(LOOP.splitlines(), 1) if "torch.zeros(2) @" in text)
    assert plugins.describe_error(info.value).endswith(f"own_code.py:{where})")


@pytest.mark.parametrize("field, value, match", [
    ("trainer", "own_code:nowhere", r"module own_code has no 'nowhere'; it has .*train"),
    ("trainer", "not_installed_mod:train", r"no module named 'not_installed_mod'"),
    ("trainer", "own_code:two_args", r"called as train\(trial\) and cannot be: missing a "
                                     r"required argument: 'other'"),
    ("model", {"name": "own_code:positional_only"}, r"called as factory\(input_shape=..., "
                                                    r"num_classes=..., \*\*model.options\)"),
    ("model", {"name": "own_code:make_net", "options": {"depth": 3}},
     r"unknown option\(s\) depth; it accepts: width"),
    ("data", {"name": "own_code:tensors", "options": {"colour": 1}},
     r"called as load\(\*\*data.options\) and cannot be: got an unexpected keyword argument"),
    ("data", {"name": "own_code:tensors", "options": {"bad": "lengths"}},
     r"x_train has 100 examples and y_train 90"),
    ("data", {"name": "own_code:tensors", "options": {"bad": "labels"}},
     r"y_train holds labels from 5 to 7; with 3 classes they must lie in \[0, 2\]"),
    ("data", {"name": "own_code:tensors", "options": {"bad": "ints"}},
     r"x_train is torch.int64; give float inputs"),
    ("data", {"name": "own_code:tensors", "options": {"bad": "shapes"}},
     r"training inputs are shaped \(6,\) and test inputs \(7,\)"),
    ("data", {"name": "own_code:tensors", "options": {"bad": "raise"}},
     r"loader 'own_code:tensors' raised FileNotFoundError: /data/signals.npz \(.*own_code.py"),
    ("data", {"name": "no_such_set"}, r"Unknown dataset 'no_such_set'.*Your own: "
                                      r"module:function"),
    ("data", {"name": "own_code:pictures"}, r"returned data that cannot be read: TypeError: "
                                            r"the dataset's inputs must be tensors"),
    ("data", {"name": "own_code:empty"}, r"returned no training examples"),
    ("data", {"name": "imagefolder", "path": ".", "options": {"size": 3}},
     r"imagefolder' got unknown option\(s\) size"),
])
def test_bad_code_of_ones_own_is_refused_before_anything_trains(own, field, value, match):
    cfg = _cfg(**{field: value})
    with pytest.raises(ConfigError, match=match):
        check_config(cfg)


def test_a_model_factory_of_ones_own_trains_in_the_built_in_loop(own):
    cfg = TrialConfig.from_dict({"data": {"name": "own_code:tensors"},
                                 "model": {"name": "own_code:make_net", "options": {"width": 5}},
                                 "optim": {"epochs": 2, "batch_size": 32}})
    check_config(cfg)
    r = run_trial(cfg)
    assert r.epochs_completed == 2 and r.num_params == 6 * 5 + 5 + 5 * 3 + 3
    with pytest.raises(TypeError, match=r"returned a str, not a torch\.nn\.Module"):
        models.create_model("own_code:not_a_module", (6,), 3)


def test_a_loader_may_return_torch_datasets_which_are_streamed(own):
    cfg = TrialConfig.from_dict({"data": {"name": "own_code:datasets", "workers": 0},
                                 "model": {"name": "mlp", "options": {"width": 8}},
                                 "optim": {"epochs": 2, "batch_size": 16}})
    data = data_mod.prepare_data(cfg.data)
    assert data.streamed and data.input_shape == (4,) and data.num_classes == 3
    assert len(data.y_train) + len(data.y_val) == 90 and len(data.y_test) == 30
    r = run_trial(cfg, data=data)
    assert r.epochs_completed == 2 and 0.0 <= r.final["test_acc"] <= 1.0


def test_installed_packages_register_models_and_datasets_by_entry_point(own, tmp_path,
                                                                      monkeypatch):
    dist = tmp_path / "site" / "own_code_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: own-code-plugin\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text("[dm_search.models]\ntinynet = own_code:make_net\n"
                                           "[dm_search.datasets]\nblobs = own_code:tensors\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    cfg = TrialConfig.from_dict({"data": {"name": "blobs"}, "model": {"name": "tinynet"},
                                 "optim": {"epochs": 1, "batch_size": 32}})
    check_config(cfg)
    assert run_trial(cfg).epochs_completed == 1
    with pytest.raises(ValueError, match=r"Installed \(dm_search.models\): tinynet"):
        models.create_model("tinynett", (6,), 3)


def test_a_trainer_brings_its_own_data_or_none(own):
    cfg = TrialConfig.from_dict({"trainer": "own_code:train", "optim": {"epochs": 2}})
    assert cfg.data is None
    with pytest.raises(ConfigError, match="the built-in training loop needs a dataset"):
        TrialConfig.from_dict({"data": None})
    with pytest.raises(ConfigError, match="a trainer of your own counts epochs"):
        TrialConfig.from_dict({"trainer": "own_code:train", "optim": {"iterations": 100}})
    with pytest.raises(ConfigError, match=r"trainer must look like module:function"):
        TrialConfig.from_dict({"trainer": "own_code.train"})


def test_dm_search_train_runs_a_loop_of_ones_own(own, tmp_path, cli_runner, plain):
    from dm_search.cli.app import app

    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""
        trainer: own_code:train
        data: {name: "own_code:tensors"}
        optim: {epochs: 3, lr: 0.1}
    """))
    out = cli_runner.invoke(app, ["train", str(tmp_path / "mine.yaml"), "-q"])
    assert out.exit_code == 0, out.output
    assert "trainer=own_code:train" in plain(out.output) and "best val acc" in out.output
    out = cli_runner.invoke(app, ["train", str(tmp_path / "mine.yaml"), "-q",
                                  "--set", "trainer=own_code:raises"])
    assert out.exit_code == 1
    text = plain(out.output)
    assert "trainer own_code:raises raised KeyError" in text and "own_code.py:" in text
    assert "Traceback" not in text


def test_a_failure_in_shipped_code_names_the_users_own_file(monkeypatch):
    shipped = ("/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_94d5/"
               "pkg/labs.py")
    assert plugins.shipped_to_source(shipped) == shipped  # nothing shipped: as it is
    monkeypatch.setenv(plugins.ENV_CODE, "/home/me/project")
    assert plugins.shipped_to_source(shipped) == "/home/me/project/pkg/labs.py"
    assert plugins.shipped_to_source("/home/me/other.py") == "/home/me/other.py"


def test_a_missing_module_names_every_folder_searched(own, tmp_path):
    plugins.add_code_paths([tmp_path / "code"])
    with pytest.raises(plugins.UserCodeError) as info:
        plugins.load_reference("nosuchmod:train", "trainer")
    assert str((tmp_path / "code").resolve()) in str(info.value)
    assert "Check the module's name" in str(info.value)


def test_a_yaml_file_of_nested_aliases_is_refused_in_bounded_time(tmp_path):
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 400
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="expands to more than 200,000 values"):
        load_trial_config(bomb)
    assert time.monotonic() - t0 < 2.0
    # Megabytes of nesting are refused as fast (the YAML scanner slows with its square).
    (tmp_path / "deep.yaml").write_text("a: " + "[" * 2_000_000 + "]" * 2_000_000 + "\n")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="nests brackets"):
        read_yaml(tmp_path / "deep.yaml")
    assert time.monotonic() - t0 < 2.0
    (tmp_path / "blocks.yaml").write_text("a:\n" + "- " * 5000 + "x\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml(tmp_path / "blocks.yaml")
    # Aliases a real config uses are fine.
    (tmp_path / "ok.yaml").write_text("optim: &o {epochs: 2}\nloss: {edf: {family: cce}}\n"
                                      "data: {name: mnist1d}\n")
    assert load_trial_config(tmp_path / "ok.yaml").optim.epochs == 2


def test_the_own_model_example_validates_and_its_network_trains(tmp_path, monkeypatch,
                                                                data_root):
    from dm_search.study.reading import load_spec

    monkeypatch.chdir(tmp_path)  # found through the spec's code folder, not the cwd
    spec = load_spec(Path(__file__).resolve().parents[2] / "examples" / "own_model.yaml")
    plugins.add_code_paths([spec.code])
    base = spec.base_config()
    check_config(base)
    cfg = base.model_copy(update={"optim": base.optim.model_copy(update={"epochs": 1}),
                                  "data": base.data.model_copy(update={
                                      "num_samples": 400, "root": str(data_root)})})
    assert run_trial(cfg).num_params > 0
