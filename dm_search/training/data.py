"""Datasets as in-memory tensors (or streamed from disk), and the paper's split: clean
validation carved out of the training set BEFORE label noise is applied to the rest; the test
set is untouched.

Registry: ``@register("name")`` on a loader ``(cfg: DataConfig, root: Path) -> RawData``. A
loader of one's own is named ``"my_module:load"`` (or registered by an installed package under
the ``dm_search.datasets`` entry point) and called as ``load(**data.options)`` (``sources``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dm_search.common import plugins
from dm_search.common.paths import file_in_the_way
from dm_search.common.registry import Registry
from dm_search.training import noise as noise_mod
from dm_search.training.config import DataConfig
from dm_search.training.inputs import Inputs, RawData, Stream, take
from dm_search.training.sources import check_imagefolder, imagefolder, user_data

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


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing and could not be downloaded."""


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


Loader = Callable[[DataConfig, Path], RawData]
_REGISTRY: Registry[Loader] = Registry("dataset")
register = _REGISTRY.register
names = _REGISTRY.names
get = _REGISTRY.get


def data_root(cfg: DataConfig) -> Path:
    """cfg.root, else $DM_SEARCH_DATA, else ~/.cache/dm-search/data."""
    root = cfg.root or os.environ.get("DM_SEARCH_DATA") or "~/.cache/dm-search/data"
    return Path(root).expanduser()


def _standardise(train: Tensor, test: Tensor, dims: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    mean = train.mean(dim=dims, keepdim=True)
    std = train.std(dim=dims, keepdim=True).clamp_min(1e-8)
    return (train - mean) / std, (test - mean) / std


# ---------------------------------------------------------------------- offline datasets
@register("mnist1d")
def _mnist1d(cfg: DataConfig, root: Path) -> RawData:
    """MNIST-1D (Greydanus 2020), generated offline and cached: 40-sample 1-D signals,
    10 classes, 4000 train + 1000 test by default (num_samples sets the total)."""
    n = cfg.num_samples or 5000
    cache = root / "mnist1d" / f"mnist1d_n{n}_seed42.pt"
    if cache.is_file():
        d = torch.load(cache, weights_only=True)
    else:
        from mnist1d.data import get_dataset_args, make_dataset

        args = get_dataset_args()
        args.num_samples = n
        raw = make_dataset(args)
        d = {k: torch.as_tensor(np.asarray(raw[k])) for k in ("x", "y", "x_test", "y_test")}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(d, tmp)
        tmp.replace(cache)  # atomic, so concurrent trials never read a half-written file
    x_tr, x_te = _standardise(d["x"].float().unsqueeze(1), d["x_test"].float().unsqueeze(1),
                              (0, 2))
    return RawData(x_tr, d["y"].long(), x_te, d["y_test"].long(), 10)


@register("digits")
def _digits(cfg: DataConfig, root: Path) -> RawData:
    """scikit-learn's 8x8 handwritten digits (1797 images, offline); a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.as_tensor(d.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1797))
    cut = int(0.8 * len(y))
    tr, te = perm[:cut], perm[cut:]
    x_tr, x_te = _standardise(x[tr], x[te], (0, 2, 3))
    return RawData(x_tr, y[tr], x_te, y[te], 10)


@register("npz")
def _npz(cfg: DataConfig, root: Path) -> RawData:
    """A user's .npz with x_train, y_train, x_test, y_test. Images (N, H, W, C) uint8 or
    (N, C, H, W); vectors (N, D); signals (N, C, L). Standardised per channel."""
    if not cfg.path:
        raise ValueError("dataset 'npz' needs data.path: a .npz file with x_train, y_train, "
                         "x_test, y_test")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"npz dataset {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as f:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
        if missing:
            raise ValueError(f"{path.name} lacks {', '.join(sorted(missing))}; it holds "
                             f"{', '.join(f.files)}")
        arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    x_tr = torch.as_tensor(arrays["x_train"]).float()
    x_te = torch.as_tensor(arrays["x_test"]).float()
    if x_tr.dim() == 4 and x_tr.shape[-1] in (1, 3) and x_tr.shape[1] not in (1, 3):
        x_tr, x_te = x_tr.permute(0, 3, 1, 2), x_te.permute(0, 3, 1, 2)
    dims = (0,) if x_tr.dim() == 2 else (0, *range(2, x_tr.dim()))
    x_tr, x_te = _standardise(x_tr.contiguous(), x_te.contiguous(), dims)
    y_tr = torch.as_tensor(arrays["y_train"]).long().reshape(-1)
    y_te = torch.as_tensor(arrays["y_test"]).long().reshape(-1)
    k = int(max(int(y_tr.max()), int(y_te.max())) + 1)
    return RawData(x_tr, y_tr, x_te, y_te, k)


# ---------------------------------------------------------------------- torchvision datasets
def _torchvision(name: str, cfg: DataConfig, root: Path, files: str) -> tuple[object, object]:
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
           "fashion_mnist": tvd.FashionMNIST, "svhn": tvd.SVHN}[name]
    folder = root / name

    def build(download: bool) -> tuple[object, object]:
        if name == "svhn":
            return (cls(str(folder), split="train", download=download),
                    cls(str(folder), split="test", download=download))
        return (cls(str(folder), train=True, download=download),
                cls(str(folder), train=False, download=download))

    try:
        return build(False)
    except RuntimeError:
        if not cfg.download:
            raise DatasetUnavailable(
                f"{name} is not in {folder} and data.download is false. Put {files} in "
                f"{folder}, or set data.download: true on a machine with network access."
            ) from None
    try:
        return build(True)
    except Exception as err:  # urllib and http errors differ by platform; all mean the same
        raise DatasetUnavailable(
            f"{name} is not in {folder} and downloading it failed ({type(err).__name__}: "
            f"{err}). On a machine with network access run any dm-search command on it once "
            f"(or torchvision's downloader) and copy {files} into {folder}; or point "
            f"data.root / $DM_SEARCH_DATA at a directory that has them."
        ) from None


def _images(train: object, test: object, k: int, pad: int, flip: bool) -> RawData:
    def to_tensor(ds: object) -> tuple[Tensor, Tensor]:
        data = np.asarray(ds.data)  # type: ignore[attr-defined]
        targets = getattr(ds, "targets", None)
        if targets is None:
            targets = ds.labels  # type: ignore[attr-defined]
        x = torch.as_tensor(data)
        if x.dim() == 3:  # (N, H, W) grayscale
            x = x.unsqueeze(1)
        elif x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # (N, H, W, C)
            x = x.permute(0, 3, 1, 2)
        return x.float().div_(255.0).contiguous(), torch.as_tensor(np.asarray(targets)).long()

    x_tr, y_tr = to_tensor(train)
    x_te, y_te = to_tensor(test)
    x_tr, x_te = _standardise(x_tr, x_te, (0, 2, 3))
    return RawData(x_tr, y_tr, x_te, y_te, k, crop_pad=pad, flip=flip)


# name -> (classes, default crop padding, default flip, the files to put in place offline)
_TORCHVISION: dict[str, tuple[int, int, bool, str]] = {
    "cifar10": (10, 4, True, "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
    "cifar100": (100, 4, True, "cifar-100-python/ (train, test, meta)"),
    "mnist": (10, 0, False, "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"),
    "fashion_mnist": (10, 0, False, "FashionMNIST/raw/ (the four idx files)"),
    "svhn": (10, 4, False, "train_32x32.mat and test_32x32.mat"),  # flipped digits change
}


def _torchvision_loader(name: str) -> Loader:
    k, pad, flip, files = _TORCHVISION[name]

    def load(cfg: DataConfig, root: Path) -> RawData:
        tr, te = _torchvision(name, cfg, root, files)
        return _images(tr, te, k, pad, flip)

    load.__doc__ = f"{name} through torchvision (downloaded once into data.root/{name})."
    return load


for _name in _TORCHVISION:
    register(_name)(_torchvision_loader(_name))

register("imagefolder")(imagefolder)

# Classes of the datasets whose count is known without loading them (an npz's comes from its
# labels), and of the datasets a named asymmetric noise map flips between.
_CLASSES = {"mnist1d": 10, "digits": 10, **{n: v[0] for n, v in _TORCHVISION.items()}}
_MAP_CLASSES = {"cifar10": 10, "cifar100": 100}


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
    if cfg.name == "mnist1d" or cfg.name in _TORCHVISION:  # they write into data.root
        blocked = file_in_the_way(data_root(cfg))
        if blocked is not None:
            raise DatasetUnavailable(f"data.root {str(data_root(cfg))!r} cannot hold the "
                                     f"dataset: {blocked} is a file, not a folder")
    noise = cfg.noise
    labels = Path(noise.path).expanduser() if noise.kind == "file" and noise.path else None
    if labels is not None and not labels.is_file():
        why = "is a folder, not a file" if labels.is_dir() else "does not exist"
        raise DatasetUnavailable(f"noise.path {noise.path!r} {why}")
    k = _CLASSES.get(cfg.name)
    if k is not None and noise.kind == "symmetric":
        try:
            noise_mod.check_symmetric_rate(noise.rate, k)
        except ValueError as err:
            raise ValueError(f"noise.rate: {err}") from None
    if k is not None and noise.kind == "asymmetric" and _MAP_CLASSES.get(noise.map, 0) > k:
        raise ValueError(f"noise.map {noise.map!r} needs {_MAP_CLASSES[noise.map]} classes; "
                         f"{cfg.name} has {k}. Use map: auto or pairflip")
    if cfg.name == "npz":
        if not cfg.path:
            raise ValueError("dataset 'npz' needs data.path: a .npz file with x_train, y_train, "
                             "x_test, y_test")
        if not Path(cfg.path).expanduser().is_file():
            raise DatasetUnavailable(f"data.path {cfg.path!r} does not exist")
    if cfg.name in _TORCHVISION and not cfg.download:
        folder = data_root(cfg) / cfg.name
        if not folder.is_dir() or not any(folder.iterdir()):
            raise DatasetUnavailable(
                f"{cfg.name} is not in {folder} and data.download is false. Put "
                f"{_TORCHVISION[cfg.name][3]} in {folder}, or set data.download: true on a "
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
