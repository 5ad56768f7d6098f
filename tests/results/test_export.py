"""Export: the best full-budget trial as a versioned EDF file, and load_loss back."""

import optuna
import pytest
import torch

from dm_search import EDF, DMLoss, load_loss
from dm_search import storage as st
from dm_search.results.export import export_trial
from dm_search.training.config import TrialConfig
from dm_search.training.exported import ExportError, read_export, write_export

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study(tmp_path, make_study):
    return make_study(f"sqlite:///{tmp_path}/studies.db")


def test_export_best_and_round_trip_gives_the_trials_gradient(study, tmp_path):
    doc = export_trial(study)
    assert doc["provenance"]["trial"] == 1 and doc["edf"] == {"family": "dm", "lam": 1.0,
                                                              "beta": 16.0}
    assert doc["mode"] == 0.5 and doc["spread"] == 16.0
    assert doc["mean"] == pytest.approx(0.5) and 0.15 < doc["std"] < 0.2
    assert doc["result"]["final_test_acc_mean"] == 0.86
    assert doc["result"]["ce_test_acc_mean"] == 0.61
    for suffix in ("yaml", "json"):
        path = write_export(doc, tmp_path / f"best.{suffix}")
        assert read_export(path) == doc
        loaded = load_loss(path)
        cfg = st.trial_config(study.trials[1])["loss"]
        direct = DMLoss(EDF.from_config(cfg["edf"]), normalise=cfg["normalise"], eps=cfg["eps"])
        z = torch.randn(32, 10, dtype=torch.float64)
        y = torch.randint(0, 10, (32,))
        grads = []
        for fn in (loaded, direct):
            x = z.clone().requires_grad_()
            fn(x, y).backward()
            grads.append(x.grad)
        assert torch.equal(grads[0], grads[1])


def test_export_refuses_what_is_not_eligible(study, tmp_path):
    with pytest.raises(ExportError, match=r"trial 4 is early-stopped \(1 of 6 epochs\)"):
        export_trial(study, 4)
    with pytest.raises(ExportError, match=r"no trial 99; its trials are 0\.\.7"):
        export_trial(study, 99)
    assert export_trial(study, 2)["edf"] == {"family": "cce"}
    empty = optuna.create_study(storage=f"sqlite:///{tmp_path}/e.db", study_name="empty")
    with pytest.raises(ExportError, match="no trial that ran its full budget"):
        export_trial(empty)


def test_load_loss_checks_the_schema(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("edf: {family: dm}\n")
    with pytest.raises(ExportError, match="not a dm-search EDF export"):
        load_loss(bad)
    bad.write_text("dm_search_edf: 7\nedf: {family: dm}\nloss: {normalise: batch}\n")
    with pytest.raises(ExportError, match=r"schema version 7; .* reads versions 1, 2, 3"):
        load_loss(bad)
    bad.write_text("dm_search_edf: 1\nedf: {family: dm, lam: -1}\nloss: {normalise: batch}\n")
    with pytest.raises(ExportError, match="'lam'=-1"):
        load_loss(bad)


def _valid_export(tmp_path):
    return write_export({"dm_search_edf": 1, "edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
                         "loss": {"normalise": "batch", "eps": 5e-7}}, tmp_path / "ok.yaml")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (bytes(range(256)) * 4, r"is not text, so not a dm-search EDF export"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"is not text"),
        (b"", r"is empty"),
        (b"  \n# only a comment\n", r"is empty"),
        (b"- dm\n- 0.5\n", r"not a dm-search EDF export \(a list, not a mapping with a "
                           r"'dm_search_edf' key\)"),
        (b"just some words\n", r"not a dm-search EDF export \(a str, not a mapping"),
        (b"family: dm\nlam: 0.5\n", r"not a dm-search EDF export \(no 'dm_search_edf' key\)"),
        (b"a: [unclosed\n", r"is neither YAML nor JSON"),
        (b'{"dm_search_edf": 1, "edf": ', r"is neither YAML nor JSON"),
        (b"dm_search_edf: 1\nedf: {family: cosine}\nloss: {normalise: batch}\n",
         r"Unknown EDF family 'cosine'\. Known families: beta, cce, dm"),
        (b"dm_search_edf: 1\nedf: {family: null}\nloss: {normalise: batch}\n",
         r"needs a family name"),
        (b"dm_search_edf: 1\nedf: [dm]\nloss: {normalise: batch}\n",
         r"An EDF config is a mapping with a 'family' key"),
        (b"dm_search_edf: 1\nedf: {family: dm}\n", r"loss\.normalise must be one of batch, none"),
        (b"dm_search_edf: 1\nedf: {family: dm}\nloss: [batch]\n",
         r"loss\.normalise must be one of"),
        (b"dm_search_edf: 1\nedf: {family: dm}\nloss: {normalise: batch, eps: lots}\n",
         r"loss\.eps must be a number >= 0; got 'lots'"),
        (b"dm_search_edf: 1\nedf: {family: dm}\nloss: {normalise: batch, eps: [1]}\n",
         r"loss\.eps must be a number >= 0; got \[1\]"),
        (b"dm_search_edf: 1\nedf: {family: dm}\nloss: {normalise: batch, eps: -1}\n",
         r"eps must be a finite number >= 0"),
    ],
)
def test_load_loss_refuses_what_is_not_an_export_naming_the_file(tmp_path, content, match):
    path = tmp_path / "best_edf.yaml"
    path.write_bytes(content)
    with pytest.raises(ExportError, match=match) as info:
        load_loss(path)
    assert str(path) in str(info.value)


def test_load_loss_of_a_missing_file_or_a_folder_says_so(tmp_path):
    with pytest.raises(ExportError, match=r"EDF file '.*nowhere\.yaml' does not exist"):
        load_loss(tmp_path / "nowhere.yaml")
    with pytest.raises(ExportError, match=r"is a folder, not a file"):
        load_loss(tmp_path)


def test_a_hand_written_export_loads_with_a_string_eps(tmp_path):
    # YAML 1.1 reads 5e-7 (no dot) as a string; the loss takes it as the number meant.
    path = _valid_export(tmp_path)
    path.write_text(path.read_text().replace("eps: 5.0e-07", "eps: 5e-7"))
    assert "5e-7" in path.read_text()
    assert load_loss(path).eps == 5e-7


def test_the_export_carries_the_recipe_the_edf_won_with(study, tmp_path):
    from dm_search import load_recipe

    doc = export_trial(study)
    assert doc["recipe"]["lr"] == 0.05 and doc["recipe"]["epochs"] == 6
    assert doc["recipe"]["schedule"] == "cosine" and doc["recipe"]["batch_size"] == 128
    path = write_export(doc, tmp_path / "best.yaml")
    recipe = load_recipe(path)
    opt = recipe.optimizer(torch.nn.Linear(3, 2).parameters())
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    assert (recipe.epochs, recipe.batch_size) == (6, 128)


def test_an_export_without_a_recipe_still_loads_with_a_warning(study, tmp_path):
    from dm_search import load_recipe

    doc = export_trial(study)
    old = {**{k: v for k, v in doc.items() if k != "recipe"}, "dm_search_edf": 1}
    path = write_export(old, tmp_path / "old.yaml")
    with pytest.warns(UserWarning, match="exported without its training recipe"):
        assert isinstance(load_loss(path), DMLoss)
    with pytest.raises(ExportError, match="Re-export it"):
        load_recipe(path)
    bad = write_export({**doc, "recipe": {**doc["recipe"], "lr": "fast"}}, tmp_path / "b.yaml")
    with pytest.raises(ExportError, match=r"b\.yaml: recipe\.lr"):
        load_recipe(bad)


SCHEDULED_SPACE = {"families": {"dm": {"mode": [0.0, 0.75], "spread": [4.0, 24.0],
                                       "mode_end": [0.0, 0.75], "ramp": ["linear", "cosine"]}}}


def test_a_schedule_is_exported_and_loads_as_a_loss_that_follows_it(tmp_path, make_study):
    study = make_study(
        f"sqlite:///{tmp_path}/studies.db", space=SCHEDULED_SPACE,
        trials=[({"dm.mode": 0.2, "dm.spread": 16.0, "dm.mode_end": 0.6, "dm.ramp": "cosine"},
                 [.5, .6, .7, .8, .8, .8], "full")])
    doc = export_trial(study)
    assert doc["dm_search_edf"] == 3  # older readers refuse it rather than drop the schedule
    assert doc["mode"] == pytest.approx(0.2)
    sched = doc["schedule"]
    assert sched["mode_end"] == pytest.approx(0.6) and sched["spread_end"] == 16.0
    assert sched["ramp"] == {"shape": "cosine", "start": 0.0, "end": 1.0,
                             "coords": "mode_spread"}
    path = write_export(doc, tmp_path / "best.yaml")
    loss_fn = load_loss(path)
    trained = DMLoss(TrialConfig.from_dict(st.trial_config(study.trials[0]))
                     .loss.build_schedule())
    assert loss_fn.schedule == trained.schedule
    z, y = torch.randn(32, 10, dtype=torch.float64), torch.randint(0, 10, (32,))
    with pytest.raises(RuntimeError, match="set_step"):
        loss_fn(z, y)
    for step in (0, 37, 100):
        grads = []
        for fn in (loss_fn, trained):
            fn.set_step(step, 100)
            x = z.clone().requires_grad_()
            fn(x, y).backward()
            grads.append(x.grad)
        assert torch.equal(grads[0], grads[1])
    assert loss_fn.edf.mode == pytest.approx(0.6)


def test_a_fixed_edf_is_still_exported_as_version_2(study):
    doc = export_trial(study)
    assert doc["dm_search_edf"] == 2 and "schedule" not in doc


def test_a_broken_schedule_in_an_export_is_refused_naming_the_file(tmp_path):
    path = write_export({"dm_search_edf": 3, "edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
                         "schedule": {"edf_end": {"family": "gce", "q": 0.5}},
                         "loss": {"normalise": "batch"}}, tmp_path / "x.yaml")
    with pytest.raises(ExportError, match=r"x\.yaml: an emphasis schedule moves within one"):
        load_loss(path)
