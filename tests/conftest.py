"""Shared fixtures: data, ports, a PostgreSQL server, and the helpers the search tests use to
write specs, run the CLI as a user would and check what a study recorded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from dm_search import storage as st
from dm_search.edf import EDF
from dm_search.study.space import make_space, trial_config_for
from dm_search.study.spec import StudySpec

CLI = str(Path(sys.executable).parent / "dm-search")


def _plain(text: str) -> str:
    """Output without colours, box borders and line wrapping, for substring checks."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    text = re.sub(r"\s*[│╭╮╰╯─]+\s*", " ", text)
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="session")
def plain():
    """``plain(output)``: CLI output without colours, box borders and line wrapping."""
    return _plain


@pytest.fixture
def cli_runner():
    """Typer's runner for the dm-search app, in this process."""
    from typer.testing import CliRunner

    return CliRunner()


class _RunsCode:
    """Unpickling this creates ``marker``: a harmless stand-in for the code a hostile pickle
    runs, since a pickle may name any callable to rebuild an object, here ``open``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.marker, "w"))


@pytest.fixture
def hostile_pt():
    """``hostile_pt(path) -> marker``: writes a .pt file at ``path`` that creates ``marker``
    when it is unpickled. ``torch.load(path, weights_only=False).close()`` shows it is live."""
    import torch

    def write(path: Path) -> Path:
        marker = path.with_name(f"{path.name}.code-ran")
        torch.save(_RunsCode(marker), path)
        return marker

    return write


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """One data directory for the whole run, so generated datasets are cached once."""
    return tmp_path_factory.mktemp("data")


def _free_port() -> int:
    from tests.pgserver import free_port

    return free_port()


@pytest.fixture(scope="session")
def free_port():
    return _free_port


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on loopback for the whole run; its URL carries a password
    so that tests can check it never leaks (the server trusts loopback, so any password works).
    """
    from tests.pgserver import postgres_server

    with postgres_server("dmsearch") as port:
        yield f"postgresql+psycopg://dm:pg-secret-pw@127.0.0.1:{port}/dmsearch"


# ------------------------------------------------------------------ search helpers
def _write_spec(folder: Path, data_root: Path, *, name: str = "tiny", epochs: int = 3,
               n_trials: int = 4, model: str = "mlp", num_samples: int = 400, **extra) -> Path:
    spec = {
        "name": name,
        "study_dir": str(folder),
        "base": {
            "data": {"name": "mnist1d", "num_samples": num_samples, "root": str(data_root),
                     "noise": {"kind": "symmetric", "rate": 0.4}},
            "model": {"name": model, "options": {"width": 8}},
            "optim": {"epochs": epochs, "batch_size": 64},
            "diagnostics": False,
        },
        "space": {"families": {"dm": {}, "gce": {}}},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 2},
        "n_trials": n_trials,
        "max_concurrent": 2,
        "resources": {"cpu": 1},
        "warm_start": True,
        # Races are on by default; the studies that test them ask for them.
        "race": {"enabled": False},
    }
    spec.update(extra)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run_cli(*args: str, timeout: float = 600, env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    full_env.pop("RAY_ADDRESS", None)
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env=full_env)


def _status_json(storage: str, study: str) -> dict:
    out = _run_cli("status", study, "--storage", storage, "--json", timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _check_study(url: str, name: str, n_trials: int, epochs: int, references: int = 1,
                ) -> optuna.Study:
    study = optuna.load_study(study_name=name, storage=st.open_storage(url))
    trials = study.trials
    assert len(trials) == n_trials + references
    assert st.study_spec(study)["name"] == name
    assert study.user_attrs[st.StudyKey.VERSION]
    assert len(study.user_attrs[st.StudyKey.FINGERPRINT]) == 16
    for t in trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL), t
        reason = t.user_attrs[st.TrialKey.STOP]
        assert reason in (st.FINISHED, st.EARLY) or reason.startswith("failed")
        assert st.trial_config(t)["loss"]["edf"] == st.trial_edf(t)
        assert st.trial_node(t)["id"] and st.trial_node(t)["cores"]  # and the machine's CPU
        history = st.trial_history(study, t)
        done, _ = st.trial_epochs(t)
        assert [h["epoch"] for h in history] == list(range(1, (done or 0) + 1))
        if reason == st.FINISHED:
            assert t.user_attrs[st.TrialKey.EPOCHS] == epochs == t.user_attrs[st.TrialKey.TOTAL]
            assert t.value == pytest.approx(history[-1]["val_acc"])
        elif reason == st.EARLY:
            assert t.user_attrs[st.TrialKey.EPOCHS] < epochs
            assert t.state == TrialState.PRUNED
    for t in trials:  # both coordinate pairs on every trial
        assert {"mode", "spread", "mean", "std"} <= set(t.user_attrs)
    for t in trials:  # a dashboard row of short scalars: configs and histories live elsewhere
        long = {k: v for k, v in t.user_attrs.items()
                if isinstance(v, dict | list) or len(str(v)) > 40}
        assert not long, (t.number, long)
        assert t.user_attrs[st.TrialKey.FAMILY] == st.trial_edf(t)["family"]
        if st.trial_history(study, t):
            last = st.trial_history(study, t)[-1]
            assert t.user_attrs[st.TrialKey.VAL_ACC] == round(last["val_acc"], 4)
            assert t.user_attrs[st.TrialKey.TEST_ACC] == round(last["test_acc"], 4)
            assert t.user_attrs[st.TrialKey.NODE] == st.trial_node(t)["ip"]
    assert all(len(str(v)) <= 200 for v in study.user_attrs.values()), study.user_attrs
    for t in trials:  # the dashboard's figures, drawn while the trials ran, all attached
        if t.user_attrs[st.TrialKey.STOP] in (st.FINISHED, st.EARLY):
            names = [m.filename for m in get_all_artifact_meta(t, storage=study._storage)]
            assert "learning_curves.svg" in names, (t.number, names)
            assert st.is_reference(t) or "edf_curve.svg" in names, (t.number, names)
    if not references:
        return study
    # CE ran once, as the reference, at full budget; then the paper's settings (warm start)
    refs = st.reference_trials(study)
    assert [st.trial_edf(t) for t in refs] == [{"family": "cce"}]
    assert refs[0].user_attrs[st.TrialKey.STOP] == st.FINISHED and refs[0].params == {}
    searched = [t for t in trials if not st.is_reference(t)]
    assert st.trial_edf(searched[0]) == {"family": "dm", "lam": 0.5, "beta": 8.0}
    assert all(st.trial_edf(t)["family"] != "cce" for t in searched)
    return study



@pytest.fixture(scope="session")
def search() -> SimpleNamespace:
    """``search.write_spec(folder, data_root, ...)`` a tiny study spec; ``search.run_cli(*args)``
    the dm-search command in a subprocess; ``search.status_json(url, study)``;
    ``search.check_study(url, name, n_trials, epochs)`` what every study must have recorded;
    ``search.cli``, the command's path."""
    return SimpleNamespace(cli=CLI, write_spec=_write_spec, run_cli=_run_cli,
                           status_json=_status_json, check_study=_check_study)


# ------------------------------------------------------------------ a study without Ray
STUDY_SPEC: dict[str, Any] = {
    "name": "made",
    "base": {"data": {"name": "mnist1d", "noise": {"kind": "symmetric", "rate": 0.4}},
             "optim": {"epochs": 6}},
    "space": {"families": {"dm": {}, "gce": {}}},
    "final": {"enabled": True, "seeds": 2},
}
# (edf params, val_acc at each epoch, epochs run): 6 epochs is the full budget
STUDY_TRIALS: list[tuple[dict[str, Any], list[float], str]] = [
    ({"family": "dm", "dm.mode": 1 / 3, "dm.spread": 8.0}, [.5, .6, .7, .75, .78, .80], "full"),
    ({"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0}, [.5, .65, .72, .80, .83, .84], "full"),
    ({"family": "cce"}, [.55, .60, .62, .61, .58, .55], "full"),  # the CE reference
    ({"family": "gce", "gce.mode": 0.4}, [.5, .6, .7, .74, .76, .77], "full"),
    ({"family": "dm", "dm.mode": 0.7, "dm.spread": 4.0}, [.9], "early"),  # stopped after 1
    ({"family": "dm", "dm.mode": 0.1, "dm.spread": 20.0}, [.4, .5, .6, .7, .72, .74], "full"),
    ({"family": "dm", "dm.mode": 0.2, "dm.spread": 5.0}, [.5, .6], "failed"),
    ({"family": "dm", "dm.mode": 0.6, "dm.spread": 12.0}, [.5, .6, .7, .75, .78, .79], "full"),
]


def _make_study(url: str, trials: list | None = None, **spec_fields: Any) -> optuna.Study:
    spec = StudySpec.model_validate({**STUDY_SPEC, **spec_fields})
    storage = st.open_storage(url)
    study = st.open_study(storage, spec, resume=False).study
    space = make_space(spec)
    for params, curve, kind in STUDY_TRIALS if trials is None else trials:
        if params.get("family") == "cce":
            trial = st.new_reference_trial(study,
                                           trial_config_for(spec, EDF("cce")).to_dict())
        else:
            study.enqueue_trial(params)
            trial = study.ask()
            st.record_trial_config(trial, space(trial)["trial_config"])
        hist = [{"epoch": e + 1, "val_acc": v, "test_acc": v - 0.01, "memorised": 0.1 * e,
                 "train_loss": 1.0, "epoch_s": 0.1} for e, v in enumerate(curve)]
        for e, v in enumerate(curve):  # as the driver records each epoch
            st.record_epoch(storage, trial._trial_id, epoch=e + 1, total=6, metrics=hist[e],
                            node={"ip": "127.0.0.1", "id": "abc123"} if e == 0 else None,
                            value=None if params.get("family") == "cce" else v)
        if kind == "failed":
            st.record_failure(storage, trial._trial_id, "TrialDiverged: trial diverged in epoch 2")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif kind == "early":  # as the search records a trial its scheduler stopped
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, curve[-1])
    st.record_dataset(study, "0123456789abcdef", 0.4)
    def final_run(seed: int, test: list[float], mem: list[float]) -> dict[str, Any]:
        return {"seed": seed, "test_acc": test[-1], "memorised": mem[-1], "epochs": len(test),
                "history": [{"epoch": e + 1, "test_acc": a, "memorised": m}
                            for e, (a, m) in enumerate(zip(test, mem, strict=True))]}

    st.record_final_stage(study, {
        "seeds": 2,
        "best": {"trial": 1, "edf": {"family": "dm", "lam": 1.0, "beta": 16.0},
                 "runs": [final_run(0, [.6, .8, .85], [.0, .04, .05]),
                          final_run(1, [.6, .82, .87], [.0, .05, .07])],
                 "test_acc_mean": 0.86, "test_acc_std": 0.0141},
        "ce": {"edf": {"family": "cce"},
               "runs": [final_run(0, [.6, .7, .60], [.1, .3, .5]),
                        final_run(1, [.6, .72, .62], [.1, .4, .6])],
               "test_acc_mean": 0.61, "test_acc_std": 0.0141},
        "gain": 0.25,
    })
    return study


@pytest.fixture(scope="session")
def make_study():
    """``make_study(url, trials=None, **spec_fields)``: a small finished study written
    straight into a database, as the search records it, so that report, export and dashboard
    tests need no Ray run."""
    return _make_study


# On the fused path (DMLoss(compile=True)) every new shape and dtype compiles a kernel, seconds
# each on a cold cache: the fast set runs these loss tests on it, the full suite all of them.
FUSED_FAST = {
    "test_gradient_is_the_dm_gradient",
    "test_an_example_without_a_p_gets_no_weight_and_poisons_only_its_row",
    "test_trains_a_model_under_torch_compile",
    "test_backward_twice_needs_retain_graph",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        spec = getattr(item, "callspec", None)
        if (spec is not None and spec.params.get("path") == "fused"
                and getattr(item, "originalname", "") not in FUSED_FAST):
            item.add_marker(pytest.mark.slow)
