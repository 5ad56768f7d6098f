"""The datasets dm-search knows by name: MNIST-1D and scikit-learn's digits (offline), a
user's ``.npz``, torchvision's image sets and ``imagefolder``; each a loader
``(cfg: DataConfig, root: Path) -> RawData`` in a registry (``@register("name")``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dm_search.common.registry import Registry
from dm_search.training.config import DataConfig
from dm_search.training.inputs import RawData
from dm_search.training.sources import imagefolder

__all__ = ["CLASSES", "MAP_CLASSES", "TORCHVISION", "DatasetUnavailable", "Loader",
           "data_root", "get", "names", "register"]


class DatasetUnavailable(RuntimeError):
    """The dataset's files are missing and could not be downloaded."""


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
TORCHVISION: dict[str, tuple[int, int, bool, str]] = {
    "cifar10": (10, 4, True, "cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta)"),
    "cifar100": (100, 4, True, "cifar-100-python/ (train, test, meta)"),
    "mnist": (10, 0, False, "MNIST/raw/ (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                            "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte)"),
    "fashion_mnist": (10, 0, False, "FashionMNIST/raw/ (the four idx files)"),
    "svhn": (10, 4, False, "train_32x32.mat and test_32x32.mat"),  # flipped digits change
}


def _torchvision_loader(name: str) -> Loader:
    k, pad, flip, files = TORCHVISION[name]

    def load(cfg: DataConfig, root: Path) -> RawData:
        tr, te = _torchvision(name, cfg, root, files)
        return _images(tr, te, k, pad, flip)

    load.__doc__ = f"{name} through torchvision (downloaded once into data.root/{name})."
    return load


for _name in TORCHVISION:
    register(_name)(_torchvision_loader(_name))

register("imagefolder")(imagefolder)

# Classes of the datasets whose count is known without loading them (an npz's comes from its
# labels), and of the datasets a named asymmetric noise map flips between.
CLASSES = {"mnist1d": 10, "digits": 10, **{n: v[0] for n, v in TORCHVISION.items()}}
MAP_CLASSES = {"cifar10": 10, "cifar100": 100}
