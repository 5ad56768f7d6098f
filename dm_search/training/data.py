"""Datasets as in-memory tensors (or streamed from disk), and the paper's split: clean
validation carved out of the training set BEFORE label noise is applied to the rest; the test
set is untouched.

Registry: ``@register("name")`` on a loader ``(cfg: DataConfig, root: Path) -> RawData`` (the
built-in ones are in ``builtin_data``). A loader of one's own is named ``"my_module:load"``
(or registered by an installed package under the ``dm_search.datasets`` entry point) and
called as ``load(**data.options)`` (``sources``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dm_search.common import plugins
from dm_search.common.paths import file_in_the_way
from dm_search.common.registry import Registry
from dm_search.training import noise as noise_mod
from dm_search.training.builtin_data import (
    CLASSES,
    MAP_CLASSES,
    TORCHVISION,
    DatasetUnavailable,
    data_root,
    get,
    names,
    register,
)
from dm_search.training.config import DataConfig
from dm_search.training.inputs import Inputs, RawData, Stream, take
from dm_search.training.sources import check_imagefolder, user_data

__all__ = [
    "ENTRY_POINTS",
    "DatasetUnavailable",
    "Inputs",
    "PreparedData",
    "RawData",
    "Stream",
    "data_root",
    "get",
    "load_raw",
    "names",
    "prepare_data",
    "register",
    "take",
    "user_data",
]


@dataclass
class PreparedData:
    """The tensors a trial trains on.

    Attributes:
        x_train, y_train: training split with (possibly noisy) labels ``y_train``.
        y_train_clean: the clean labels of the training split.
        corrupted: (N_train,) bool, where ``y_train`` differs from the clean label.
        x_val, y_val: the clean validation split (may be empty when val_fraction is 0).
        x_test, y_test: the untouched test set.
        noise_rate: realised fraction of corrupted training labels.
        fingerprint: sha256 prefix over the tensors and the noise, for provenance.
    """

    x_train: Inputs
    y_train: Tensor
    y_train_clean: Tensor
    corrupted: Tensor
    x_val: Inputs
    y_val: Tensor
    x_test: Inputs
    y_test: Tensor
    num_classes: int
    noise_rate: float
    crop_pad: int
    flip: bool
    fingerprint: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        if isinstance(self.x_train, Stream):
            return self.x_train.shape()
        return tuple(self.x_train.shape[1:])

    @property
    def streamed(self) -> bool:
        """Whether the inputs are read from disk as training goes (not held in memory)."""
        return isinstance(self.x_train, Stream)


# ---------------------------------------------------------------------- the split
def check_available(cfg: DataConfig) -> None:
    """What can be known without loading: a registered dataset, its file or folder where it
    cannot be made or downloaded. Raises ValueError / DatasetUnavailable saying the fix."""
    check_loader(cfg)  # unknown names list the known ones
    if is_builtin(cfg.name) and cfg.options and cfg.name != "imagefolder":
        raise ValueError(f"dataset {cfg.name!r} takes no options (data.options is for "
                         "imagefolder and loaders of your own)")
    if cfg.name == "imagefolder":
        check_imagefolder(cfg)
    if cfg.name == "mnist1d" or cfg.name in TORCHVISION:  # they write into data.root
        blocked = file_in_the_way(data_root(cfg))
        if blocked is not None:
            raise DatasetUnavailable(f"data.root {str(data_root(cfg))!r} cannot hold the "
                                     f"dataset: {blocked} is a file, not a folder")
    noise = cfg.noise
    labels = Path(noise.path).expanduser() if noise.kind == "file" and noise.path else None
    if labels is not None and not labels.is_file():
        why = "is a folder, not a file" if labels.is_dir() else "does not exist"
        raise DatasetUnavailable(f"noise.path {noise.path!r} {why}")
    k = CLASSES.get(cfg.name)
    if k is not None and noise.kind == "symmetric":
        try:
            noise_mod.check_symmetric_rate(noise.rate, k)
        except ValueError as err:
            raise ValueError(f"noise.rate: {err}") from None
    if k is not None and noise.kind == "asymmetric" and MAP_CLASSES.get(noise.map, 0) > k:
        raise ValueError(f"noise.map {noise.map!r} needs {MAP_CLASSES[noise.map]} classes; "
                         f"{cfg.name} has {k}. Use map: auto or pairflip")
    if cfg.name == "npz":
        if not cfg.path:
            raise ValueError("dataset 'npz' needs data.path: a .npz file with x_train, y_train, "
                             "x_test, y_test")
        if not Path(cfg.path).expanduser().is_file():
            raise DatasetUnavailable(f"data.path {cfg.path!r} does not exist")
    if cfg.name in TORCHVISION and not cfg.download:
        folder = data_root(cfg) / cfg.name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise DatasetUnavailable(
                f"{cfg.name} is not in {folder} and data.download is false. Put "
                f"{TORCHVISION[cfg.name][3]} in {folder}, or set data.download: true on a "
                "machine with network access.")


ENTRY_POINTS = "dm_search.datasets"


def get_loader(name: str) -> Callable[..., Any]:
    """A built-in loader, a loader of your own ("my_module:load") or one an installed package
    registers under the ``dm_search.datasets`` entry point (those two take the options)."""
    return plugins.resolve(name, "dataset loader", get, ENTRY_POINTS)


def is_builtin(name: str) -> bool:
    return name in names()


def check_loader(cfg: DataConfig) -> None:
    """A dataset name that resolves; for a loader of one's own, one that takes the options."""
    loader = get_loader(cfg.name)
    if not is_builtin(cfg.name):
        problem = plugins.call_problem(loader, (), dict(cfg.options or {}))
        if problem:
            raise ValueError(f"dataset loader {cfg.name!r} is called as load(**data.options) "
                             f"and cannot be: {problem}")


def load_raw(cfg: DataConfig) -> RawData:
    if is_builtin(cfg.name):
        return get(cfg.name)(cfg, data_root(cfg))
    loader = get_loader(cfg.name)
    try:
        result = loader(**(cfg.options or {}))
    except Exception as err:
        raise ValueError(f"dataset loader {cfg.name!r} raised "
                         f"{plugins.describe_error(err)}") from err
    try:
        return user_data(result, cfg.name)
    except ValueError:
        raise
    except Exception as err:  # the user's Dataset, indexed to read its labels and shapes
        raise ValueError(f"dataset loader {cfg.name!r} returned data that cannot be read: "
                         f"{plugins.describe_error(err)}") from err


# ------------------------------------------------------------------ label noise kinds
@dataclass(frozen=True)
class _NoiseInput:
    cfg: DataConfig
    y_all: Tensor  # the whole training set's clean labels
    train_index: Tensor  # which of them form the training split
    num_classes: int
    generator: torch.Generator

    @property
    def y_clean(self) -> Tensor:
        return self.y_all[self.train_index]


NoiseKind = Callable[[_NoiseInput], noise_mod.NoisyLabels]
_NOISE: Registry[NoiseKind] = Registry("noise kind")


def noise_kinds() -> list[str]:
    """The registered label-noise kinds (``data.noise.kind``)."""
    return _NOISE.names()


@_NOISE.register("none")
def _no_noise(inp: _NoiseInput) -> noise_mod.NoisyLabels:
    y = inp.y_clean
    return noise_mod.NoisyLabels(y.clone(), torch.zeros_like(y, dtype=torch.bool))


@_NOISE.register("symmetric")
def _symmetric(inp: _NoiseInput) -> noise_mod.NoisyLabels:
    return noise_mod.symmetric_noise(inp.y_clean, inp.num_classes, inp.cfg.noise.rate,
                                     generator=inp.generator)


@_NOISE.register("asymmetric")
def _asymmetric(inp: _NoiseInput) -> noise_mod.NoisyLabels:
    cfg, k, g = inp.cfg, inp.num_classes, inp.generator
    which: str = cfg.noise.map
    if which == "auto":
        which = cfg.name if cfg.name in ("cifar10", "cifar100") else "pairflip"
    if which == "cifar10":
        mapping = noise_mod.CIFAR10_ASYMMETRIC
    elif which == "cifar100":
        mapping = noise_mod.cifar100_pair_map(generator=g)
    else:
        mapping = noise_mod.pairflip_map(k)
    if max(max(mapping), max(mapping.values())) >= k:
        raise ValueError(f"noise map {which!r} needs more classes than {cfg.name}'s {k}")
    return noise_mod.asymmetric_noise(inp.y_clean, k, cfg.noise.rate, mapping, generator=g)


@_NOISE.register("file")
def _from_file(inp: _NoiseInput) -> noise_mod.NoisyLabels:
    nk, k = inp.cfg.noise, inp.num_classes
    assert nk.path is not None
    file_labels = noise_mod.labels_from_file(nk.path, key=nk.key)
    if file_labels.shape != inp.y_all.shape:
        raise ValueError(
            f"noisy labels in {nk.path} have {len(file_labels)} entries; the "
            f"{inp.cfg.name} training set has {len(inp.y_all)}: they must be aligned one to one"
        )
    labels = file_labels[inp.train_index]
    if int(labels.min()) < 0 or int(labels.max()) >= k:
        raise ValueError(f"noisy labels in {nk.path} fall outside [0, {k - 1}]")
    return noise_mod.NoisyLabels(labels, labels != inp.y_clean)


def prepare_data(cfg: DataConfig, raw: RawData | None = None) -> PreparedData:
    """Load ``cfg.name`` and apply, in order: imbalance subsampling of the training set, the
    clean validation split, then label noise on the remaining training examples."""
    if raw is None:
        raw = load_raw(cfg)
    k = raw.num_classes
    g = torch.Generator().manual_seed(cfg.seed)
    y_all = raw.y_train

    apply_noise = _NOISE.get(cfg.noise.kind)
    idx = torch.arange(len(y_all))
    if cfg.imbalance.ratio > 1:
        idx = noise_mod.long_tail_indices(y_all, k, cfg.imbalance.ratio, generator=g)
    perm = idx[torch.randperm(len(idx), generator=g)]
    n_val = round(cfg.val_fraction * len(perm))
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    if len(tr_idx) == 0:
        raise ValueError(f"val_fraction {cfg.val_fraction} leaves no training examples")
    y_clean = y_all[tr_idx]

    noisy = apply_noise(_NoiseInput(cfg, y_all, tr_idx, k, g))

    x_train, x_val = take(raw.x_train, tr_idx), take(raw.x_train, val_idx)
    h = hashlib.sha256()
    for t in (x_train, noisy.labels, raw.y_train[val_idx], raw.x_test, raw.y_test):
        h.update(t.digest() if isinstance(t, Stream) else t.contiguous().numpy().tobytes())
    return PreparedData(
        x_train=x_train,
        y_train=noisy.labels,
        y_train_clean=y_clean,
        corrupted=noisy.corrupted,
        x_val=x_val,
        y_val=raw.y_train[val_idx],
        x_test=raw.x_test,
        y_test=raw.y_test,
        num_classes=k,
        noise_rate=noisy.rate,
        crop_pad=raw.crop_pad,
        flip=raw.flip,
        fingerprint=h.hexdigest()[:16],
    )
