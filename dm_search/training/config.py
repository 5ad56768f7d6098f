"""Typed trial configuration, validated once at the edge (YAML or dict) and frozen after.

Unknown keys are errors. Defaults sit here with a short reason each. Example (the shipped
``examples/mnist1d_dm.yaml``)::

    data:  {name: mnist1d, noise: {kind: symmetric, rate: 0.4}, val_fraction: 0.2, seed: 0}
    model: {name: cnn1d}
    loss:  {edf: {family: dm, lam: 0.5, beta: 8.0}, normalise: batch}
    optim: {epochs: 60, batch_size: 128, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4,
            schedule: cosine}
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dm_search.common.errors import ConfigError
from dm_search.edf import EDF, EDFSchedule
from dm_search.training.yamlfile import dump_yaml, read_yaml, safe_load_bounded

__all__ = [
    "AugmentConfig",
    "CheckpointConfig",
    "ConfigError",
    "DataConfig",
    "ImbalanceConfig",
    "LossConfig",
    "ModelConfig",
    "NoiseConfig",
    "OptimConfig",
    "RampConfig",
    "TrialConfig",
    "apply_overrides",
    "dump_yaml",
    "format_validation_error",
    "load_trial_config",
    "read_yaml",
    "safe_load_bounded",
]


class FrozenModel(BaseModel):
    """Base of every config model: unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class NoiseConfig(FrozenModel):
    """Label noise applied to the training split (never to validation or test)."""

    kind: Literal["none", "symmetric", "asymmetric", "file"] = "none"
    rate: float = Field(0.0, ge=0.0, le=1.0)
    # asymmetric: auto picks the dataset's standard map (CIFAR-10 class map, CIFAR-100
    # superclass pair swaps) and falls back to pair-flip c -> c + 1 for other datasets.
    map: Literal["auto", "cifar10", "cifar100", "pairflip"] = "auto"
    path: str | None = None  # kind=file: labels aligned with the full training set
    key: str | None = None  # kind=file: array inside an .npz / .pt file

    @model_validator(mode="after")
    def _consistent(self) -> NoiseConfig:
        if self.kind == "file" and not self.path:
            raise ValueError("noise kind 'file' needs path: a .npy/.npz/.pt file of labels")
        if self.kind in ("symmetric", "asymmetric") and self.rate == 0.0:
            raise ValueError(f"noise kind {self.kind!r} needs rate > 0 (or use kind: none)")
        return self


class ImbalanceConfig(FrozenModel):
    """Long-tailed subsampling of the training set before the split."""

    ratio: float = Field(1.0, ge=1.0)  # 1 keeps every example


class DataConfig(FrozenModel):
    name: str = "mnist1d"
    noise: NoiseConfig = NoiseConfig()
    # The paper picks hyperparameters on a clean 20% of the training set.
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    imbalance: ImbalanceConfig = ImbalanceConfig()
    seed: int = 0
    root: str | None = None  # data directory; default $DM_SEARCH_DATA or ~/.cache/dm-search
    download: bool = True  # torchvision datasets only
    num_samples: int | None = Field(None, ge=10)  # generated datasets (mnist1d): train + test
    path: str | None = None  # npz dataset file; imagefolder's folder
    # Passed to the loader: imagefolder's (image_size), or a loader of your own's
    # (name: "my_module:load") as keyword arguments.
    options: dict[str, Any] | None = None
    # DataLoader worker processes for datasets streamed from disk (imagefolder, or a loader
    # that returns torch Datasets); default: the trial's CPUs, at most 4.
    workers: int | None = Field(None, ge=0)


class ModelConfig(FrozenModel):
    name: str = "cnn1d"
    options: dict[str, Any] = Field(default_factory=dict)  # passed to the model factory


class RampConfig(FrozenModel):
    """When an emphasis schedule moves from ``loss.edf`` to ``loss.edf_end``: between
    ``start`` and ``end`` (fractions of the training budget), ``shape`` linear, cosine or step
    (one switch halfway between start and end), interpolated in ``coords``."""

    shape: Literal["linear", "cosine", "step"] = "linear"
    start: float = Field(0.0, ge=0.0, le=1.0)
    end: float = Field(1.0, ge=0.0, le=1.0)
    coords: Literal["mode_spread", "moments"] = "mode_spread"

    @model_validator(mode="after")
    def _ordered(self) -> RampConfig:
        if self.start > self.end:
            raise ValueError(f"start ({self.start:g}) is after end ({self.end:g})")
        return self


DEFAULT_EDF = {"family": "dm", "lam": 0.5, "beta": 8.0}


class LossConfig(FrozenModel):
    edf: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_EDF))
    # An emphasis schedule: the EDF moves from edf to edf_end (same family) as ramp says; a
    # parameter edf_end leaves out is edf's (the spread stays, say, when only lam moves).
    edf_end: dict[str, Any] | None = None
    ramp: RampConfig | None = None  # default with edf_end: linear over the whole budget
    normalise: Literal["batch", "none"] = "batch"
    eps: float = Field(5e-7, ge=0.0)

    @field_validator("edf", "edf_end")
    @classmethod
    def _valid_edf(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if v is None else EDF.from_config(v).to_config()

    @model_validator(mode="before")
    @classmethod
    def _default_ramp(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("edf_end"), dict):
            return data
        given = data.get("edf")
        start: dict[str, Any] = given if isinstance(given, dict) else DEFAULT_EDF
        end = data["edf_end"]
        if end.get("family", start.get("family")) == start.get("family"):
            end = {**start, **end}
        # Recorded whole, so that a trial's config says how its EDF moved.
        return {**data, "edf_end": end, "ramp": data.get("ramp") or {}}

    @model_validator(mode="after")
    def _valid_schedule(self) -> LossConfig:
        if self.ramp is not None and self.edf_end is None:
            raise ValueError("ramp says when the EDF moves to edf_end: give edf_end (an EDF "
                             "of the same family), or leave ramp out for a fixed EDF")
        self.build_schedule()
        return self

    def build_edf(self) -> EDF:
        """The EDF at the start of training (the only one, without a schedule)."""
        return EDF.from_config(self.edf)

    def build_schedule(self) -> EDFSchedule | None:
        """The emphasis schedule, or None for a fixed EDF."""
        if self.edf_end is None:
            return None
        ramp = self.ramp or RampConfig()
        return EDFSchedule(self.build_edf(), EDF.from_config(self.edf_end),
                           {"shape": ramp.shape, "start": ramp.start, "end": ramp.end},
                           coords=ramp.coords)


# Epochs a trial trains when its config gives neither epochs nor iterations.
DEFAULT_EPOCHS = 30


class OptimConfig(FrozenModel):
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0.0)
    batch_size: int = Field(128, ge=1)
    epochs: int | None = Field(None, ge=1)  # DEFAULT_EPOCHS when neither this nor iterations
    iterations: int | None = Field(None, ge=1)  # alternative to epochs (the paper counts these)
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    # multistep: fractions of training at which lr is multiplied by gamma; the paper's CIFAR-100
    # recipe (15k and 22k of 30k iterations) is [0.5, 0.733].
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = Field(0.1, gt=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0)

    @property
    def epoch_budget(self) -> int | None:
        """Epochs to train; None when the budget is in iterations (the epoch count then
        depends on the training-set size)."""
        if self.iterations is not None:
            return None
        return self.epochs or DEFAULT_EPOCHS

    @model_validator(mode="after")
    def _budget(self) -> OptimConfig:
        if self.epochs is not None and self.iterations is not None:
            raise ValueError("give either epochs or iterations, not both")
        if any(not 0.0 < m < 1.0 for m in self.milestones):
            raise ValueError("milestones are fractions of training, each in (0, 1)")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class AugmentConfig(FrozenModel):
    """Batched on-device augmentation; null means the dataset's default."""

    crop_pad: int | None = Field(None, ge=0)
    flip: bool | None = None


class CheckpointConfig(FrozenModel):
    dir: str | None = None  # where to save; nothing is saved without it
    every: int = Field(1, ge=1)  # epochs between checkpoints
    resume: bool = True  # continue from the latest checkpoint in dir when there is one


def _reference(v: str | None, what: str) -> str | None:
    if v is not None and (v.count(":") != 1 or not all(v.split(":"))):
        raise ValueError(f"{what} must look like module:function (e.g. my_module:{what}); got "
                         f"{v!r}")
    return v


class TrialConfig(FrozenModel):
    # None only with a trainer of your own, which may bring its own data.
    data: DataConfig | None = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    device: str = "auto"  # auto: cuda when available, else cpu
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA only
    threads: int | None = Field(None, ge=1)  # torch threads; default: the CPUs given
    seed: int = 0  # model initialisation, shuffling and augmentation
    eval_batch_size: int = Field(1024, ge=1)
    diagnostics: bool = True  # per-epoch pass over the training set (memorisation etc.)
    # torch.compile the model and fuse the loss (DMLoss(compile=True)). None is off; it says
    # how a trial runs, not what it trains, so comparisons of configs leave it out.
    compile: bool | None = None
    # A training loop of your own, "module:function": it is called with a TrialContext
    # (dm_search.TrialContext) and reports each epoch through it.
    trainer: str | None = None
    # Your own hyperparameters, handed to your trainer as trial.params; search them as
    # space.params: {params.NAME: ...}.
    # (None, not {}, when unset: a config recorded before this field existed compares equal.)
    params: dict[str, Any] | None = None

    @field_validator("trainer")
    @classmethod
    def _trainer_ref(cls, v: str | None) -> str | None:
        return _reference(v, "trainer")

    @model_validator(mode="before")
    @classmethod
    def _data_default(cls, data: Any) -> Any:
        # A trainer of your own that loads its data itself gives no data section: it gets
        # trial.data = None. The built-in loop always trains on a dataset.
        if isinstance(data, dict) and data.get("trainer") and "data" not in data:
            return {**data, "data": None}
        return data

    @model_validator(mode="after")
    def _data_needed(self) -> TrialConfig:
        if self.data is None and self.trainer is None:
            raise ValueError("data: the built-in training loop needs a dataset (data: {name: "
                             "...}); only a trainer of your own may go without one")
        if self.trainer is not None and self.optim.iterations is not None:
            raise ValueError("optim.iterations: a trainer of your own counts epochs; give "
                             "optim.epochs instead")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v != "auto" and not (v == "cpu" or v == "mps" or v.split(":")[0] == "cuda"):
            raise ValueError("device must be auto, cpu, cuda, cuda:N or mps")
        return v

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-safe dict that :meth:`from_dict` reads back to an equal config."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> TrialConfig:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            raise ConfigError(format_validation_error(err, source)) from None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: field path, the bad value, what is allowed."""
    lines = [f"{source} is not valid:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (remove it or check its spelling)"
        got = e.get("input")
        shown = "" if e["type"] == "missing" else f" (got {got!r})"
        if isinstance(got, dict) and e["type"] != "extra_forbidden":
            shown = ""
        lines.append(f"  {path}: {msg}{shown}")
    return "\n".join(lines)


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``data["a"]["b"]["c"] = value`` for the dotted ``path`` "a.b.c", in place,
    creating missing sections."""
    *parents, last = path.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{path!r}: {part!r} is a value, not a section")
        node = child
    node[last] = value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a nested dict copy."""
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like a.b=value (e.g. optim.lr=0.1)")
        try:
            set_path(out, key.strip(), _parse_scalar(value))
        except ConfigError as err:
            raise ConfigError(f"override {item!r}: {err}") from None
    return out


def load_trial_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrialConfig:
    """Read a YAML trial config, apply ``--set`` overrides, validate."""
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides)
    return TrialConfig.from_dict(data, source=str(path) if path else "config")
