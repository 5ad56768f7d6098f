"""Bad input, every command, one table: the mistakes a new user makes with dm-search (wrong
types, values out of range, unknown names, broken or missing files, unusable databases,
outputs that cannot be written, ports that cannot be had), each checked the way the user
meets it: the exit code, a message that names what was wrong, no traceback, and nothing
written (no new study, no output file, no study folder).

Each row builds its input inside the test's tmp_path, which is also the working directory,
so a default output (runs/, report.html, best_edf.yaml) would show up there too. Rows that
call the Python API (``load_loss``) expect its ExportError instead of an exit code. One row
starts Ray (a GPU trial on a machine without one) and is marked slow; the rest take well under
a second each.
"""

from __future__ import annotations

import hashlib
import socket
import sqlite3
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dm_search.cli import app
from dm_search.training.config import apply_overrides

API = "load_loss"  # a row whose argv starts with this calls dm_search.load_loss(argv[1])
EXPORT_ERROR = "ExportError"  # what such a row expects instead of an exit code

TRAIN_CONFIG = {
    "data": {"name": "mnist1d", "num_samples": 400,
             "noise": {"kind": "symmetric", "rate": 0.4}},
    "model": {"name": "mlp", "options": {"width": 8}},
    "optim": {"epochs": 1, "batch_size": 64},
    "threads": 1,
    "diagnostics": False,
}
EXPORT = {"dm_search_edf": 1, "edf": {"family": "dm", "lam": 0.5, "beta": 8.0},
          "loss": {"normalise": "batch", "eps": 5e-7}}


class World:
    """What a row builds its bad input from: files in tmp_path (the working directory), a
    study database, free and busy ports."""

    def __init__(self, tmp: Path, data_root: Path, search: Any, make_study: Any,
                 study_db: Path) -> None:
        self.tmp = tmp
        self.data_root = data_root
        self.search = search
        self.make_study = make_study
        self._study_db = study_db
        self._sockets: list[socket.socket] = []

    def path(self, name: str) -> str:
        return str(self.tmp / name)

    def file(self, name: str, text: str | bytes = "", data: Any = None) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            text = yaml.safe_dump(data)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        return str(path)

    def dir(self, name: str) -> str:
        (self.tmp / name).mkdir(parents=True, exist_ok=True)
        return str(self.tmp / name)

    @property
    def afile(self) -> str:
        """A regular file: a path under it can never be created, whoever runs the tests."""
        return self.file("afile", "not a folder\n")

    def config(self, *sets: str) -> str:
        """A valid tiny training config, with ``a.b=value`` overrides applied."""
        cfg = apply_overrides(TRAIN_CONFIG, [f"data.root={self.data_root}", *sets])
        return self.file("train.yaml", data=cfg)

    def spec(self, *sets: str, **extra: Any) -> str:
        """A valid tiny study spec (its study_dir is runs/, which does not exist yet), with
        top-level fields from ``extra`` and then ``a.b=value`` overrides applied."""
        (self.tmp / "spec").mkdir(exist_ok=True)
        extra.setdefault("study_dir", self.path("runs"))
        path = self.search.write_spec(self.tmp / "spec", self.data_root, **extra)
        if sets:
            data = apply_overrides(yaml.safe_load(path.read_text()), list(sets))
            path.write_text(yaml.safe_dump(data))
        return str(path)

    def default_url(self) -> str:
        return f"sqlite:///{self.tmp / 'runs' / 'studies.db'}"

    def create_study(self, spec: str, url: str | None = None) -> str:
        """Create ``spec``'s study (no trials) as a first submission would; returns the URL."""
        from dm_search import storage as st
        from dm_search.study.reading import load_spec

        url = url or self.default_url()
        st.open_study(st.open_storage(url), load_spec(spec), resume=False)
        return url

    def study_url(self, name: str = "db/studies.db") -> str:
        """A database holding the finished study 'made' (tests/conftest.py's make_study)."""
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(self._study_db) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"

    def early_only_url(self) -> str:
        """A database whose one study 'made' has only an early-stopped trial."""
        (self.tmp / "early").mkdir()
        url = f"sqlite:///{self.tmp / 'early' / 'studies.db'}"
        self.make_study(url, [({"family": "dm", "dm.mode": 0.5, "dm.spread": 16.0}, [.5],
                               "early")])
        return url

    def port(self) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def busy_port(self) -> int:
        s = socket.create_server(("127.0.0.1", 0))
        self._sockets.append(s)
        return s.getsockname()[1]

    def close(self) -> None:
        for s in self._sockets:
            s.close()


@pytest.fixture(scope="module")
def study_db(tmp_path_factory, make_study) -> Path:
    path = tmp_path_factory.mktemp("made") / "studies.db"
    make_study(f"sqlite:///{path}")
    return path


@pytest.fixture
def world(tmp_path, data_root, search, make_study, study_db, monkeypatch):
    for var in ("DM_SEARCH_STORAGE", "DM_SEARCH_STUDY_DIR", "DM_SEARCH_DATA", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    w = World(tmp_path, data_root, search, make_study, study_db)
    yield w
    w.close()
    if "ray" in sys.modules:  # a row that started Ray must not hand it to the next one
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _db_state(path: Path) -> Any:
    """A study database's studies and how much each holds; None when it is not one."""
    try:
        with sqlite3.connect(path) as con:
            rows = con.execute(
                "SELECT s.study_name, (SELECT count(*) FROM trials t WHERE t.study_id = "
                "s.study_id), (SELECT count(*) FROM study_user_attributes a WHERE a.study_id "
                "= s.study_id), (SELECT count(*) FROM study_system_attributes a WHERE "
                "a.study_id = s.study_id) FROM studies s ORDER BY s.study_name").fetchall()
        return ("studies", rows)
    except sqlite3.DatabaseError:
        return None


def _snapshot(root: Path) -> dict[str, Any]:
    """Every file and folder under ``root``: a database by its studies, any other file by its
    content. SQLite's -wal and -shm companions come and go with connections and are left out."""
    out: dict[str, Any] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name.endswith(("-wal", "-shm", "-journal")):
            continue
        if p.is_dir():
            out[rel] = "folder"
        elif p.read_bytes()[:16] == b"SQLite format 3\x00":
            out[rel] = _db_state(p) or hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _call_api(path: str) -> tuple[Any, str]:
    from dm_search import load_loss
    from dm_search.training.exported import ExportError

    try:
        load_loss(path)
    except ExportError as err:
        return EXPORT_ERROR, str(err)
    return "returned", "load_loss returned a loss"


def row(make: Callable[[World], list[str]], code: int | str, expect: str, name: str,
        *marks: Any) -> Any:
    """One kind of bad input: ``make(world)`` builds the command line, ``code`` is the exit
    code (or EXPORT_ERROR), ``expect`` a distinctive part of the message."""
    return pytest.param(make, code, expect, id=name, marks=marks)


CASES = [
    # ------------------------------------------------------------------ train CONFIG
    row(lambda w: ["train"], 2, "Missing argument 'config'", "train-no-config"),
    row(lambda w: ["train", "nowhere.yaml"], 2, "config file 'nowhere.yaml' does not exist",
        "train-config-missing"),
    row(lambda w: ["train", w.dir("configs")], 2, "configs' is a directory: give the YAML file",
        "train-config-is-a-directory"),
    row(lambda w: ["train", w.file("t.yaml", "")], 2, "t.yaml is empty", "train-config-empty"),
    row(lambda w: ["train", w.file("t.yaml", "data: {name: [mnist1d\n")], 2,
        "t.yaml is not valid YAML", "train-config-malformed-yaml"),
    row(lambda w: ["train", w.file("t.yaml", "- data\n- model\n")], 2,
        "t.yaml must hold a mapping of sections", "train-config-is-a-list"),
    row(lambda w: ["train", w.file("t.bin", b"\xff\xfe\x00\x01" * 64)], 2,
        "cannot read", "train-config-binary"),
    row(lambda w: ["train", w.file("t.yaml", "dtaa: {name: mnist1d}\n")], 2,
        "dtaa: unknown key (remove it or check its spelling)", "train-unknown-section"),
    row(lambda w: ["train", w.config("optim.learning_rate=0.1")], 2,
        "optim.learning_rate: unknown key", "train-typo-in-section"),
    row(lambda w: ["train", w.config("optim.epochs=many")], 2,
        "optim.epochs: Input should be a valid integer", "train-epochs-not-a-number"),
    row(lambda w: ["train", w.config("optim.batch_size=0")], 2,
        "optim.batch_size: Input should be greater than or equal to 1", "train-batch-size-0"),
    row(lambda w: ["train", w.config("optim.momentum=1.0")], 2,
        "optim.momentum: Input should be less than 1", "train-momentum-1"),
    row(lambda w: ["train", w.config("optim.optimizer=lbfgs")], 2,
        "optim.optimizer: Input should be 'sgd', 'adam' or 'adamw'", "train-unknown-optimizer"),
    row(lambda w: ["train", w.config("loss.edf_end={family: gce, q: 0.5}")], 2,
        "loss: Value error, an emphasis schedule moves within one family", "train-edf-end-family"),
    row(lambda w: ["train", w.config("loss.ramp={shape: cosine}")], 2,
        "ramp says when the EDF moves to edf_end: give edf_end", "train-ramp-without-edf-end"),
    row(lambda w: ["train", w.config("loss.edf_end={family: dm}", "loss.ramp.start=0.9",
                                     "loss.ramp.end=0.5")], 2,
        "loss.ramp: Value error, start (0.9) is after end (0.5)", "train-ramp-reversed"),
    row(lambda w: ["train", w.config("loss.edf_end={family: dm}", "loss.ramp.shape=sigmoid")],
        2, "loss.ramp.shape: Input should be 'linear', 'cosine' or 'step'",
        "train-ramp-unknown-shape"),
    row(lambda w: ["train", w.config("optim.schedule=linear")], 2, "optim.schedule:",
        "train-unknown-schedule"),
    row(lambda w: ["train", w.config("optim.iterations=100")], 2,
        "give either epochs or iterations, not both", "train-epochs-and-iterations"),
    row(lambda w: ["train", w.config("device=tpu")], 2,
        "device: Value error, device must be auto, cpu, cuda, cuda:N or mps",
        "train-unknown-device"),
    row(lambda w: ["train", w.config("device=cuda")], 2,
        "device 'cuda' was asked for but CUDA is not available here", "train-cuda-without-gpu"),
    row(lambda w: ["train", w.config("data.name=imagenet")], 2,
        "Unknown dataset 'imagenet'. Known datasets:", "train-unknown-dataset"),
    row(lambda w: ["train", w.config("data.name=npz")], 2, "dataset 'npz' needs data.path",
        "train-npz-without-path"),
    row(lambda w: ["train", w.config("data.val_fraction=1.0")], 2,
        "data.val_fraction: Input should be less than 1", "train-val-fraction-1"),
    row(lambda w: ["train", w.config("data.imbalance.ratio=0.5")], 2,
        "data.imbalance.ratio: Input should be greater than or equal to 1",
        "train-imbalance-below-1"),
    row(lambda w: ["train", w.config(f"data.root={w.afile}")], 2, "data.root",
        "train-data-root-is-a-file"),
    row(lambda w: ["train", w.config("data.noise.kind=gaussian")], 2,
        "data.noise.kind: Input should be 'none', 'symmetric', 'asymmetric' or 'file'",
        "train-unknown-noise-kind"),
    row(lambda w: ["train", w.config("data.noise.rate=1.5")], 2,
        "data.noise.rate: Input should be less than or equal to 1", "train-noise-rate-above-1"),
    row(lambda w: ["train", w.config("data.noise.rate=0.9")], 2,
        "symmetric noise at rate 0.9 with 10 classes leaves the labels no information",
        "train-symmetric-rate-at-chance"),
    row(lambda w: ["train", w.config("data.noise={kind: asymmetric, rate: 0.4, map: cifar100}")],
        2, "noise.map 'cifar100' needs 100 classes; mnist1d has 10",
        "train-asymmetric-map-too-big"),
    row(lambda w: ["train", w.config("data.noise.kind=file")], 2,
        "noise kind 'file' needs path", "train-noise-file-without-path"),
    row(lambda w: ["train", w.config("data.noise.kind=file", "data.noise.path=labels.npy")], 2,
        "noise.path 'labels.npy' does not exist", "train-noise-file-missing"),
    row(lambda w: ["train", w.config("model.name=resnet99")], 2,
        "model: Unknown model 'resnet99'. Known models:", "train-unknown-model"),
    row(lambda w: ["train", w.config("model.options.depht=3")], 2,
        "model: model 'mlp' got unknown option(s) depht; it accepts: width, depth",
        "train-unknown-model-option"),
    row(lambda w: ["train", w.config("model.name=cnn2d")], 2,
        "model 'cnn2d' needs (channels, height, width) inputs", "train-model-wrong-for-data"),
    row(lambda w: ["train", w.config("loss.edf={family: dmm}")], 2,
        "loss.edf: Value error, Unknown EDF family 'dmm'", "train-unknown-edf-family"),
    row(lambda w: ["train", w.config("loss.edf={family: dm, gamma: 2}")], 2,
        "EDF 'dm' got unknown parameter(s) gamma", "train-unknown-edf-parameter"),
    row(lambda w: ["train", w.config("loss.edf={family: dm, lam: -1}")], 2,
        "loss.edf: Value error, EDF 'dm': parameter 'lam'=-1 is outside the allowed range",
        "train-edf-parameter-out-of-range"),
    row(lambda w: ["train", w.config("loss.normalise=softmax")], 2, "loss.normalise:",
        "train-unknown-normalise"),
    row(lambda w: ["train", w.config(f"checkpoint.dir={w.afile}/ckpt")], 2,
        "checkpoint.dir", "train-checkpoint-dir-under-a-file"),
    row(lambda w: ["train", w.config(), "--set", "optim.lr"], 2,
        "override 'optim.lr' must look like a.b=value", "train-set-without-equals"),
    row(lambda w: ["train", w.config(), "--set", "=0.1"], 2, "must look like a.b=value",
        "train-set-without-a-path"),
    row(lambda w: ["train", w.config(), "--set", "optim.lrr=0.1"], 2,
        "optim.lrr: unknown key", "train-set-unknown-path"),
    row(lambda w: ["train", w.config(), "--set", "optim.epochs.max=1"], 2,
        "'epochs' is a value, not a section", "train-set-under-a-value"),
    row(lambda w: ["train", w.config(), "--set", "optim.lr=fast"], 2,
        "optim.lr: Input should be a valid number", "train-set-wrong-type"),
    row(lambda w: ["train", w.config(), "--json", f"{w.afile}/r.json"], 2,
        "--json", "train-json-under-a-file"),
    row(lambda w: ["train", w.config(), "--json", w.dir("out")], 2,
        "out is a directory: give a file name in it", "train-json-is-a-directory"),
    # ------------------------------------------------------------------ submit SPEC
    row(lambda w: ["submit"], 2, "Missing argument 'spec'", "submit-no-spec"),
    row(lambda w: ["submit", w.config()], 2, "is a trial config, not a study spec: train it "
        "with `dm-search train", "submit-a-trial-config"),
    row(lambda w: ["train", w.spec()], 2, "is a study spec, not a trial config: run it with "
        "`dm-search submit", "train-a-study-spec"),
    row(lambda w: ["submit", "nowhere.yaml"], 2, "'nowhere.yaml' does not exist",
        "submit-spec-missing"),
    row(lambda w: ["submit", w.dir("specs")], 2, "specs' is a directory",
        "submit-spec-is-a-directory"),
    row(lambda w: ["submit", w.file("s.yaml", "# nothing yet\n")], 2,
        "s.yaml is empty", "submit-spec-empty"),
    row(lambda w: ["submit", w.file("s.yaml", "name: x\nspace: {families: {dm: {}}\n")], 2,
        "s.yaml is not valid YAML", "submit-spec-malformed-yaml"),
    row(lambda w: ["submit", w.file("s.yaml", "quickstart\n")], 2, "s.yaml must hold a mapping",
        "submit-spec-is-a-string"),
    row(lambda w: ["submit", "env:DM_SEARCH_NO_SUCH_VAR"], 2,
        "environment variable DM_SEARCH_NO_SUCH_VAR is not set", "submit-env-spec-unset"),
    row(lambda w: ["submit", w.spec(n_trial=5)], 2, "n_trial: unknown key",
        "submit-typo-at-top-level"),
    row(lambda w: ["submit", w.spec(), "--name", "my study"], 2,
        "name: String should match pattern", "submit-name-with-a-space"),
    row(lambda w: ["submit", w.spec(n_trials=0)], 2,
        "n_trials: Input should be greater than or equal to 1", "submit-n-trials-0"),
    row(lambda w: ["submit", w.spec(n_trials=-5)], 2,
        "n_trials: Input should be greater than or equal to 1", "submit-n-trials-negative"),
    row(lambda w: ["submit", w.spec(n_trials="many")], 2,
        "n_trials: Input should be a valid integer", "submit-n-trials-not-a-number"),
    row(lambda w: ["submit", w.spec(max_concurrent=0)], 2,
        "max_concurrent: Input should be greater than or equal to 1", "submit-max-concurrent-0"),
    row(lambda w: ["submit", w.spec(resources={"cpu": 0})], 2,
        "resources.cpu: Input should be greater than 0", "submit-cpu-0"),
    row(lambda w: ["submit", w.spec(resources={"cpu": 1, "gpu": -1})], 2,
        "resources.gpu: Input should be greater than or equal to 0", "submit-gpu-negative"),
    row(lambda w: ["submit", w.spec(sampler={"name": "bayes"})], 2,
        "sampler.name: Input should be 'tpe'", "submit-unknown-sampler"),
    row(lambda w: ["submit", w.spec(scheduler={"name": "hyperband"})], 2,
        "scheduler.name: Input should be", "submit-unknown-scheduler"),
    row(lambda w: ["submit", w.spec(scheduler={"name": "median", "reduction_factor": 3})], 2,
        "scheduler 'median' does not use reduction_factor", "submit-scheduler-option-unused"),
    row(lambda w: ["submit", w.spec(scheduler={"name": "asha", "grace_period": 10})], 2,
        "scheduler.grace_period (10) exceeds the trials' 3 epochs", "submit-grace-beyond-budget"),
    row(lambda w: ["submit", w.spec(space={"families": {"dmm": {}}})], 2,
        "space.families.dmm: unknown EDF family", "submit-unknown-edf-family"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"modee": [0.0, 0.5]}}})], 2,
        "space.families.dm.modee: unknown key", "submit-typo-in-family-space"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"mode": [0.7, 0.2]}}})], 2,
        "space.families.dm.mode: need low <= high", "submit-mode-range-reversed"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"mode": [0.0, 1.5]}}})], 2,
        "space.families.dm: the range reaches an invalid point (EDF 'dm': parameter 'mode'=1.5",
        "submit-mode-above-1"),
    row(lambda w: ["submit", w.spec(space={"families": {}})], 2,
        "space.families is empty", "submit-no-families"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"ramp": "cosine"}}})], 2,
        "space.families.dm: ramp says how the EDF moves, but no end is given: add mode_end",
        "submit-ramp-without-an-end"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"mode_end": [0.0, 1.0]}}})], 2,
        "space.families.dm: the end range reaches an invalid schedule", "submit-mode-end-at-1"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {
        "mode_end": 0.5, "ramp_start": [0.3, 0.9], "ramp_end": [0.5, 1.0]}}})], 2,
        "ramp_start [0.3, 0.9] reaches past ramp_end [0.5, 1]: no ramp may start after",
        "submit-ramp-start-past-end"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {"mode_end": 0.5,
                                                                "ramp": ["sigmoid"]}}})], 2,
        "space.families.dm.ramp", "submit-unknown-ramp-shape"),
    row(lambda w: ["submit", w.spec(space={"families": {"mae": {}}})], 2,
        "'mae' has no parameters to search; list it under baselines",
        "submit-parameterless-family-searched"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {}}, "params": {
        "optim.lrr": {"low": 0.01, "high": 0.1}}})], 2,
        "space.params.optim.lrr: not a usable trial field", "submit-param-unknown-path"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {}}, "params": {
        "optim.lr": {"low": 0.1, "high": 0.01}}})], 2,
        "a range needs low <= high", "submit-param-range-reversed"),
    row(lambda w: ["submit", w.spec(sampler={"name": "grid"})], 2,
        "sampler grid needs space.grid", "submit-grid-without-points"),
    row(lambda w: ["submit", w.spec(baselines=["ce"])], 2,
        "baselines[0]: Unknown EDF family 'ce'", "submit-unknown-baseline"),
    row(lambda w: ["submit", w.spec(budget_epochs=2)], 2,
        "budget_epochs (2) cannot hold the 1 baseline(s)", "submit-budget-epochs-too-small"),
    row(lambda w: ["submit", w.spec(race={"candidates": 1})], 2,
        "race.candidates: Input should be greater than or equal to 2",
        "submit-race-of-one-candidate"),
    row(lambda w: ["submit", w.spec(race={"rule": "best"})], 2,
        "race.rule: Input should be 'mean' or 'lcb'", "submit-race-unknown-rule"),
    row(lambda w: ["submit", w.spec(space={"families": {"dm": {}}, "family_budget": "even"})],
        2, "space.family_budget: Input should be 'coords' or 'sampler'",
        "submit-family-budget-unknown"),
    row(lambda w: ["submit", w.spec(base="nowhere.yaml")], 2,
        "base: the trial config 'nowhere.yaml' does not exist", "submit-base-missing"),
    row(lambda w: ["submit", w.spec(base=w.dir("configs"))], 2,
        "base: '", "submit-base-is-a-directory"),
    row(lambda w: ["submit", w.spec(base=w.file("b.yaml", "data: {name: [\n"))], 2,
        "base: ", "submit-base-malformed-yaml"),
    row(lambda w: ["submit", w.spec(base_set="optim.epochs=3")], 2,
        "base_set must be a list of a.b=value strings", "submit-base-set-a-string"),
    row(lambda w: ["submit", w.spec(base_set=["optim.epochs"])], 2,
        "base_set: override 'optim.epochs' must look like a.b=value",
        "submit-base-set-without-equals"),
    row(lambda w: ["submit", w.spec(base_set=["optim.epoch=3"])], 2,
        "optim.epoch: unknown key", "submit-base-set-unknown-path"),
    row(lambda w: ["submit", w.spec("base.data.nosie={kind: none}")], 2,
        "data.nosie: unknown key", "submit-base-typo-in-section"),
    row(lambda w: ["submit", w.spec("base.data.name=imagenet")], 2,
        "base.data: Unknown dataset 'imagenet'", "submit-unknown-dataset"),
    row(lambda w: ["submit", w.spec("base.model.name=resnet99")], 2,
        "base.model: Unknown model 'resnet99'", "submit-unknown-model"),
    row(lambda w: ["submit", w.spec("base.model.options.depht=3")], 2,
        "base.model: model 'mlp' got unknown option(s) depht", "submit-unknown-model-option"),
    row(lambda w: ["submit", w.spec("base.data.noise.kind=gaussian")], 2,
        "data.noise.kind: Input should be", "submit-unknown-noise-kind"),
    row(lambda w: ["submit", w.spec("base.data.noise.rate=0.95")], 2,
        "noise.rate: symmetric noise at rate 0.95 with 10 classes",
        "submit-symmetric-rate-at-chance"),
    row(lambda w: ["submit", w.spec("base.data.noise.map=cifar100",
                                    "base.data.noise.kind=asymmetric")], 2,
        "base.data: noise.map 'cifar100' needs 100 classes", "submit-asymmetric-map-too-big"),
    row(lambda w: ["submit", w.spec("base.data.noise={kind: file, path: labels.npy}")], 2,
        "noise.path 'labels.npy' does not exist", "submit-noise-file-missing"),
    row(lambda w: ["submit", w.spec("base.optim.optimizer=lbfgs")], 2,
        "optim.optimizer: Input should be", "submit-unknown-optimizer"),
    row(lambda w: ["submit", w.spec("base.data.val_fraction=0")], 2,
        "a search needs a clean validation split: base.data.val_fraction > 0",
        "submit-no-validation-split"),
    row(lambda w: ["submit", w.spec(f"base.data.root={w.afile}")], 2,
        "base.data: data.root", "submit-data-root-is-a-file"),
    row(lambda w: ["submit", w.spec(f"base.checkpoint.dir={w.afile}/ckpt")], 2,
        "checkpoint.dir", "submit-checkpoint-dir-under-a-file"),
    row(lambda w: ["submit", w.spec(), "--resume", "--resume-if-exists"], 2,
        "give --resume or --resume-if-exists, not both", "submit-resume-twice"),
    row(lambda w: ["submit", w.spec(), "--detach"], 2,
        "--detach needs --address", "submit-detach-without-address"),
    row(lambda w: ["submit", w.spec(), "--address", "nonsense"], 2,
        "Ray address 'nonsense' must look like HOST:PORT", "submit-address-malformed"),
    row(lambda w: ["submit", w.spec(), "--address", f"127.0.0.1:{w.port()}"], 2,
        "cannot connect to the Ray cluster at '127.0.0.1:", "submit-address-unreachable"),
    row(lambda w: ["submit", w.spec(), "--detach", "--address", f"http://127.0.0.1:{w.port()}"],
        2, "cannot reach the Ray job server at 'http://127.0.0.1:", "submit-detach-unreachable"),
    row(lambda w: ["submit", w.spec(resources={"cpu": 1, "gpu": 1})], 2,
        "a trial asks for 1 CPU and 1 GPU per trial, but this machine has",
        "submit-gpu-on-a-machine-without-one", pytest.mark.slow),  # starts Ray
    row(lambda w: ["submit", w.spec(), "--storage", "foo://x"], 2,
        "'foo' is not a database kind", "submit-storage-unknown-scheme"),
    row(lambda w: ["submit", w.spec(), "--storage", "mysql://u@127.0.0.1/db"], 2,
        "a database driver is missing", "submit-storage-driver-missing"),
    row(lambda w: ["submit", w.spec(), "--storage", f"sqlite:///{w.afile}/studies.db"], 2,
        "a part of its folder path is a file", "submit-storage-under-a-file"),
    row(lambda w: ["submit", w.spec(), "--storage", w.file("junk.db", "not sqlite\n" * 100)],
        2, "the file is not an SQLite database", "submit-storage-not-a-database"),
    row(lambda w: ["submit", w.spec(), "--storage",
                   f"postgresql+psycopg://dm:pg-pw@127.0.0.1:{w.port()}/dmsearch"], 2,
        "cannot open the study database postgresql+psycopg://dm:***@127.0.0.1:",
        "submit-storage-postgres-unreachable"),
    row(lambda w: ["submit", w.spec(), "--resume"], 2,
        "there is no study named 'tiny' to resume: there is no study database",
        "submit-resume-without-database"),
    row(lambda w: ["submit", w.spec(), "--resume", "--storage", w.study_url()], 2,
        "there is no study named 'tiny' to resume", "submit-resume-missing-study"),
    row(lambda w: ["submit", _submitted(w)], 2,
        "study 'tiny' already exists. Add --resume", "submit-existing-without-resume"),
    row(lambda w: ["submit", _submitted(w, space={"families": {"dm": {}}})], 2,
        "a study named 'tiny' already exists with a different spec",
        "submit-different-spec-same-name"),
    row(lambda w: ["submit", w.spec(study_dir=f"{w.afile}/runs"), "--storage",
                   f"sqlite:///{w.tmp}/db/studies.db"], 2,
        "study_dir", "submit-study-dir-under-a-file"),
    # ------------------------------------------------------------------ status, list
    row(lambda w: ["status"], 2, "no study database at", "status-no-database"),
    row(lambda w: ["status", "nope", "--storage", w.study_url()], 2,
        "no study named 'nope' in sqlite:///", "status-unknown-study"),
    row(lambda w: ["status", "--storage", w.file("junk.db", "not sqlite\n" * 100)], 2,
        "the file is not an SQLite database", "status-storage-not-a-database"),
    row(lambda w: ["status", "--storage", w.dir("runs")], 2, "no study database at",
        "status-storage-is-a-directory"),
    row(lambda w: ["status", "--storage",
                   f"postgresql+psycopg://dm:pg-pw@127.0.0.1:{w.port()}/dmsearch"], 2,
        "postgresql+psycopg://dm:***@127.0.0.1:", "status-storage-postgres-unreachable"),
    row(lambda w: ["list"], 2, "no study database at", "list-no-database"),
    row(lambda w: ["list", "--storage", "foo://x"], 2, "'foo' is not a database kind",
        "list-storage-unknown-scheme"),
    row(lambda w: ["list", "--storage", f"sqlite:///{w.afile}/studies.db"], 2,
        "no study database at", "list-storage-under-a-file"),
    row(lambda w: ["list", "made"], 2, "Got unexpected extra argument", "list-extra-argument"),
    # ------------------------------------------------------------------ report
    row(lambda w: ["report"], 2, "Missing argument 'study'", "report-no-study"),
    row(lambda w: ["report", "made"], 2, "no study database at", "report-no-database"),
    row(lambda w: ["report", "nope", "--storage", w.study_url()], 2,
        "no study named 'nope'", "report-unknown-study"),
    row(lambda w: ["report", "made", "--storage", w.study_url(), "-o", f"{w.afile}/r.html"],
        2, "--output", "report-output-under-a-file"),
    row(lambda w: ["report", "made", "--storage", w.study_url(), "-o", w.dir("out.html")], 2,
        "out.html is a directory: give a file name in it", "report-output-is-a-directory"),
    row(lambda w: ["report", "made", "--storage", w.study_url(), "-o", "report.pdf"], 2,
        "--output report.pdf: the report is one HTML file; give a .html name",
        "report-output-not-html"),
    # ------------------------------------------------------------------ export
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--trial", "4"], 2,
        "trial 4 is early-stopped (1 of 6 epochs)", "export-early-stopped-trial"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--trial", "6"], 2,
        "trial 6 is failed: TrialDiverged", "export-failed-trial"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--trial", "99"], 2,
        "study 'made' has no trial 99; its trials are 0..7", "export-trial-does-not-exist"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--trial", "-1"], 2,
        "has no trial -1", "export-trial-negative"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--trial", "best"], 2,
        "Invalid value for '--trial'", "export-trial-not-a-number"),
    row(lambda w: ["export", "nope", "--storage", w.study_url()], 2,
        "no study named 'nope'", "export-unknown-study"),
    row(lambda w: ["export", "made"], 2, "no study database at", "export-no-database"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "--format", "toml"], 2,
        "--format must be yaml or json; got 'toml'", "export-unknown-format"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "-o", f"{w.afile}/e.yaml"], 2,
        "--output", "export-output-under-a-file"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "-o", w.dir("out")], 2,
        "out is a directory: give a file name in it", "export-output-is-a-directory"),
    row(lambda w: ["export", "made", "--storage", w.early_only_url()], 2,
        "study 'made' has no trial that ran its full budget yet", "export-nothing-finished"),
    row(lambda w: ["export", "made", "--storage", w.study_url(), "-o", "best.xml"], 2,
        "give a .yaml or .json name, or say --format", "export-unknown-suffix"),
    # ------------------------------------------------------------------ dashboard
    row(lambda w: ["dashboard", "--port", "0"], 2, "--port must be between 1 and 65535; got 0",
        "dashboard-port-0"),
    row(lambda w: ["dashboard", "--port", "70000"], 2, "--port must be between 1 and 65535",
        "dashboard-port-70000"),
    row(lambda w: ["dashboard", "--port", "-1"], 2, "--port must be between 1 and 65535",
        "dashboard-port-negative"),
    row(lambda w: ["dashboard", "--port", "http"], 2, "Invalid value for '--port'",
        "dashboard-port-not-a-number"),
    row(lambda w: ["dashboard", "--storage", w.study_url(), "--port", str(w.busy_port())], 2,
        "cannot listen on 127.0.0.1:", "dashboard-port-in-use"),
    row(lambda w: ["dashboard", "--host", "203.0.113.7", "--port", str(w.port())], 2,
        "cannot listen on 203.0.113.7:", "dashboard-host-not-on-this-machine"),
    row(lambda w: ["dashboard", "--port", str(w.port())], 2, "no study database at",
        "dashboard-no-database"),
    row(lambda w: ["dashboard", "--port", str(w.port()), "--storage",
                   w.file("junk.db", "not sqlite\n" * 100)], 2,
        "the file is not an SQLite database", "dashboard-storage-not-a-database"),
    row(lambda w: ["dashboard", "--port", str(w.port()), "--storage", w.study_url(),
                   "--artifact-dir", w.path("nowhere")], 2,
        "--artifact-dir", "dashboard-artifact-dir-missing"),
    row(lambda w: ["dashboard", "--port", str(w.port()), "--storage", w.study_url(),
                   "--artifact-dir", w.afile], 2,
        "--artifact-dir", "dashboard-artifact-dir-is-a-file"),
    # ------------------------------------------------------------------ edf describe, plot, list
    row(lambda w: ["edf", "describe"], 2, "Missing argument", "edf-describe-no-family"),
    row(lambda w: ["edf", "describe", "normall"], 2,
        "Unknown EDF family 'normall'", "edf-describe-unknown-family"),
    row(lambda w: ["edf", "describe", "dm", "-p", "gamma=1"], 2,
        "EDF 'dm' got unknown parameter(s) gamma; its parameters are: beta, lam",
        "edf-describe-unknown-parameter"),
    row(lambda w: ["edf", "describe", "dm", "-p", "lam=abc"], 2,
        "lam='abc' is not a number", "edf-describe-parameter-not-a-number"),
    row(lambda w: ["edf", "describe", "dm", "-p", "beta=-1"], 2,
        "parameter 'beta'=-1.0 is outside the allowed range", "edf-describe-parameter-negative"),
    row(lambda w: ["edf", "describe", "dm", "--mode", "1.5", "--spread", "8"], 2,
        "parameter 'mode'=1.5 is outside the allowed range [0, 1]", "edf-describe-mode-above-1"),
    row(lambda w: ["edf", "describe", "dm", "--spread", "8"], 2, "--spread needs --mode too",
        "edf-describe-spread-without-mode"),
    row(lambda w: ["edf", "describe", "dm", "--std", "0.2"], 2, "--std needs --mean too",
        "edf-describe-std-without-mean"),
    row(lambda w: ["edf", "describe", "uniform", "--mode", "0.5"], 2,
        "'uniform' has no (mode, spread) coordinates", "edf-describe-mode-of-uniform"),
    row(lambda w: ["edf", "describe", "dm", "--mode", "half"], 2,
        "Invalid value for '--mode'", "edf-describe-mode-not-a-number"),
    row(lambda w: ["edf", "describe", "dm", "--points", "1"], 2,
        "Invalid value for '--points'", "edf-describe-points-1"),
    row(lambda w: ["edf", "plot", "-o", "e.html"], 2, "Missing argument 'specs'",
        "edf-plot-no-edfs"),
    row(lambda w: ["edf", "plot", "cce", "dmm:lam=1", "-o", "e.html"], 2,
        "Unknown EDF family 'dmm'", "edf-plot-unknown-family"),
    row(lambda w: ["edf", "plot", "dm:lam", "-o", "e.html"], 2,
        "EDF spec 'dm:lam': expected key=value", "edf-plot-parameter-without-value"),
    row(lambda w: ["edf", "plot", "gce:q=0.7;beta=2", "-o", "e.html"], 2,
        "EDF spec 'gce:q=0.7;beta=2'", "edf-plot-wrong-separator"),
    row(lambda w: ["edf", "plot", "cce", "-o", "curves.gif"], 2,
        "cannot write a figure as 'curves.gif': use a .html, .png", "edf-plot-suffix-gif"),
    row(lambda w: ["edf", "plot", "cce", "-o", "curves"], 2,
        "cannot write a figure as 'curves'", "edf-plot-no-suffix"),
    row(lambda w: ["edf", "plot", "cce", "-o", f"{w.afile}/e.html"], 2, "--output",
        "edf-plot-output-under-a-file"),
    row(lambda w: ["edf", "plot", "cce", "-o", w.dir("out.html")], 2,
        "out.html is a directory: give a file name in it", "edf-plot-output-is-a-directory"),
    row(lambda w: ["edf", "list", "dm"], 2, "Got unexpected extra argument",
        "edf-list-extra-argument"),
    row(lambda w: ["edf", "show", "dm"], 2, "No such command 'show'", "edf-unknown-subcommand"),
    row(lambda w: ["run", "spec.yaml"], 2, "No such command 'run'", "unknown-command"),
    # ------------------------------------------------------------------ load_loss(path)
    row(lambda w: [API, "nowhere.yaml"], EXPORT_ERROR,
        "EDF file 'nowhere.yaml' does not exist", "load-loss-missing-file"),
    row(lambda w: [API, w.dir("best")], EXPORT_ERROR, "is a folder, not a file",
        "load-loss-directory"),
    row(lambda w: [API, w.file("e.yaml", "")], EXPORT_ERROR, "e.yaml is empty",
        "load-loss-empty-file"),
    row(lambda w: [API, w.file("e.yaml", "edf: {family: [dm\n")], EXPORT_ERROR,
        "e.yaml is neither YAML nor JSON", "load-loss-malformed"),
    row(lambda w: [API, w.file("e.pt", b"\x80\x04\x95\xff\xfe" * 50)], EXPORT_ERROR,
        "e.pt is not text", "load-loss-binary-file"),
    row(lambda w: [API, w.file("e.yaml", data=TRAIN_CONFIG)], EXPORT_ERROR,
        "e.yaml is not a dm-search EDF export (no 'dm_search_edf' key)",
        "load-loss-a-trial-config"),
    row(lambda w: [API, w.file("e.yaml", "- dm\n- cce\n")], EXPORT_ERROR,
        "a list, not a mapping", "load-loss-a-list"),
    row(lambda w: [API, w.file("e.yaml", data={**EXPORT, "dm_search_edf": 4})], EXPORT_ERROR,
        "has schema version 4", "load-loss-newer-schema"),
    row(lambda w: [API, w.file("e.yaml", data={**EXPORT, "loss": {"normalise": "softmax"}})],
        EXPORT_ERROR, "loss.normalise must be one of", "load-loss-unknown-normalise"),
    row(lambda w: [API, w.file("e.yaml", data={**EXPORT, "loss": {"normalise": "batch",
                                                                  "eps": "lots"}})],
        EXPORT_ERROR, "loss.eps", "load-loss-eps-not-a-number"),
    row(lambda w: [API, w.file("e.yaml", data={**EXPORT, "loss": {"normalise": "batch",
                                                                  "eps": -1.0}})],
        EXPORT_ERROR, "eps must be a finite number >= 0; got -1.0", "load-loss-eps-negative"),
    row(lambda w: [API, w.file("e.json", '{"dm_search_edf": 1, "edf": {"family": "dmm"}, '
                                         '"loss": {"normalise": "batch"}}')], EXPORT_ERROR,
        "Unknown EDF family 'dmm'", "load-loss-unknown-family"),
    row(lambda w: [API, w.file("e.yaml", data={**EXPORT, "edf": {"family": "gce", "q": 7}})],
        EXPORT_ERROR, "parameter 'q'=7", "load-loss-parameter-out-of-range"),
    row(lambda w: [API, w.file("e.yaml", data={k: v for k, v in EXPORT.items() if k != "edf"})],
        EXPORT_ERROR, "'family' key", "load-loss-no-edf"),
]


def _submitted(w: World, **changes: Any) -> str:
    """A spec whose study exists already; with ``changes``, the spec file differs from the one
    the study was created with."""
    w.create_study(w.spec())
    return w.spec(**changes) if changes else w.spec()


@pytest.mark.parametrize(("make", "code", "expect"), CASES)
def test_bad_input_is_refused_naming_it_and_writes_nothing(make, code, expect, world, cli_runner,
                                                          plain):
    argv = make(world)
    before = _snapshot(world.tmp)
    if argv[0] == API:
        got, out = _call_api(argv[1])
    else:
        result = cli_runner.invoke(app, argv)
        crash = result.exception
        if crash is not None and not isinstance(crash, SystemExit):
            pytest.fail("".join(traceback.format_exception(crash)))
        got, out = result.exit_code, plain(result.output)
    assert got == code, out
    assert "Traceback" not in out
    assert expect in out
    assert _snapshot(world.tmp) == before, out


def test_the_table_covers_every_command():
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)
    ids = " ".join(c.id for c in CASES)
    for command in ("train", "submit", "status", "list", "report", "export", "dashboard",
                    "edf-describe", "edf-plot", "edf-list", "load-loss"):
        assert f"{command}-" in ids, command

