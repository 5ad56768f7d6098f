"""Data that is not built in: what a loader of your own returns, checked and turned into
:class:`RawData`, and ``imagefolder``, class-per-folder images read from disk as training goes.

A loader of your own (``data: {name: "my_module:load", options: {...}}``) is called as
``load(**options)`` and returns one of:

- a mapping with ``x_train, y_train, x_test, y_test`` (tensors or numpy arrays; ``x`` float,
  ``y`` integer class indices) and optionally ``num_classes``, ``crop_pad``, ``flip``;
- a mapping with ``train`` and ``test`` torch Datasets whose items are ``(x, label)`` (their
  inputs are read on demand by DataLoader workers), and optionally ``num_classes``;
- a tuple ``(x_train, y_train, x_test, y_test)`` or ``(train_dataset, test_dataset)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dm_search.training.config import DataConfig
from dm_search.training.inputs import Inputs, RawData, Stream

__all__ = ["IMAGEFOLDER_OPTIONS", "check_imagefolder", "imagefolder", "imagefolder_dirs",
           "user_data"]

_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def user_data(result: Any, name: str) -> RawData:
    """``result`` of the loader ``name`` as RawData; ValueError saying what is wrong with it."""
    if isinstance(result, RawData):
        return _checked(result, name)
    if isinstance(result, tuple | list):
        if len(result) == 4:
            result = dict(zip(_ARRAYS, result, strict=True))
        elif len(result) == 2:
            result = {"train": result[0], "test": result[1]}
    if not isinstance(result, Mapping):
        raise ValueError(f"dataset loader {name!r} returned a {type(result).__name__}; it must "
                         "return a dict with x_train, y_train, x_test, y_test (or train and "
                         "test torch Datasets), or a tuple of those")
    extra = {k: result[k] for k in ("crop_pad", "flip") if k in result}
    k = result.get("num_classes")
    x_tr: Inputs
    x_te: Inputs
    if "train" in result and "test" in result:
        x_tr, y_tr = _from_dataset(result["train"], name, "train")
        x_te, y_te = _from_dataset(result["test"], name, "test")
    else:
        missing = [a for a in _ARRAYS if a not in result]
        if missing:
            raise ValueError(f"dataset loader {name!r} returned a dict without "
                             f"{', '.join(missing)}; it has {', '.join(map(str, result))}")
        x_tr, x_te = (_inputs(result[a], name, a) for a in ("x_train", "x_test"))
        y_tr, y_te = (_labels(result[a], name, a) for a in ("y_train", "y_test"))
    if len(y_tr) == 0:
        raise ValueError(f"dataset loader {name!r} returned no training examples")
    if k is None:
        k = int(max(int(y_tr.max()), int(y_te.max()) if len(y_te) else 0)) + 1
    return _checked(RawData(x_tr, y_tr, x_te, y_te, int(k), **extra), name)


def _inputs(x: Any, name: str, what: str) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, Tensor):
        raise ValueError(f"dataset loader {name!r}: {what} is a {type(x).__name__}; give a "
                         "tensor or a numpy array")
    x = x.detach().cpu()  # the trainer moves it to the trial's device itself
    if not x.is_floating_point():
        raise ValueError(f"dataset loader {name!r}: {what} is {x.dtype}; give float inputs "
                         "(e.g. x.float() / 255, then standardised)")
    return x.float().contiguous()


def _labels(y: Any, name: str, what: str) -> Tensor:
    if isinstance(y, np.ndarray | list):
        y = torch.as_tensor(np.asarray(y))
    if not isinstance(y, Tensor):
        raise ValueError(f"dataset loader {name!r}: {what} is a {type(y).__name__}; give a "
                         "tensor or a numpy array of class indices")
    y = y.detach().cpu()
    if y.is_floating_point() or y.dtype == torch.bool or y.dim() != 1:
        raise ValueError(f"dataset loader {name!r}: {what} must be one integer class index "
                         f"per example (shape (N,)); got {y.dtype} of shape {tuple(y.shape)}")
    return y.long()


def _from_dataset(ds: Any, name: str, what: str) -> tuple[Stream, Tensor]:
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise ValueError(f"dataset loader {name!r}: {what} is a {type(ds).__name__}, not a "
                         "torch Dataset (with __len__ and __getitem__ giving (x, label))")
    targets = getattr(ds, "targets", None)
    if targets is None:
        # Labels are held in memory (noise, splits, diagnostics): read once, inputs and all.
        targets = []
        for i in range(len(ds)):
            item = ds[i]
            if not isinstance(item, tuple | list) or len(item) < 2:
                raise ValueError(f"dataset loader {name!r}: {what}[{i}] is not an (x, label) "
                                 "pair")
            targets.append(int(item[1]))
    y = _labels(torch.as_tensor(np.asarray(targets)), name, f"{what} labels")
    return Stream(ds), y


def _shape(x: Inputs) -> tuple[int, ...]:
    return x.shape() if isinstance(x, Stream) else tuple(x.shape[1:])


def _checked(raw: RawData, name: str) -> RawData:
    for split in ("train", "test"):
        x, y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
        if len(x) != len(y):
            raise ValueError(f"dataset loader {name!r}: x_{split} has {len(x)} examples "
                             f"and y_{split} {len(y)}; they must match one to one")
    if len(raw.y_train) == 0:
        raise ValueError(f"dataset loader {name!r} returned no training examples")
    if len(raw.y_test) and _shape(raw.x_train) != _shape(raw.x_test):
        raise ValueError(f"dataset loader {name!r}: training inputs are shaped "
                         f"{_shape(raw.x_train)} and test inputs {_shape(raw.x_test)}")
    k = raw.num_classes
    if k < 2:
        raise ValueError(f"dataset loader {name!r}: num_classes is {k}; a classifier needs 2 "
                         "or more")
    for split in ("train", "test"):
        y = getattr(raw, f"y_{split}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= k):
            raise ValueError(f"dataset loader {name!r}: y_{split} holds labels from "
                             f"{int(y.min())} to {int(y.max())}; with {k} classes they must lie "
                             f"in [0, {k - 1}] (set num_classes, or relabel)")
    return raw


# ---------------------------------------------------------------------- imagefolder
IMAGEFOLDER_OPTIONS = ("image_size", "stats_images")


def check_imagefolder(cfg: DataConfig) -> tuple[Path, Path]:
    """imagefolder's options and folders, checked without reading an image."""
    unknown = sorted(set(cfg.options or {}) - set(IMAGEFOLDER_OPTIONS))
    if unknown:
        raise ValueError(f"dataset 'imagefolder' got unknown option(s) {', '.join(unknown)}; it "
                         f"takes {', '.join(IMAGEFOLDER_OPTIONS)}")
    return imagefolder_dirs(cfg)


def imagefolder(cfg: DataConfig, root: Path) -> RawData:
    """Class-per-folder images under data.path (train/ and test/ or val/, one folder per class
    in each, as torchvision's ImageFolder reads them), read from disk by DataLoader workers as
    training goes. options: image_size (default: the first image's), stats_images (how many
    training images the per-channel mean and std are estimated on; 256)."""
    from torchvision import datasets, transforms

    opts = dict(cfg.options or {})
    train_dir, test_dir = check_imagefolder(cfg)
    probe = datasets.ImageFolder(str(train_dir))
    if not probe.samples:
        raise ValueError(f"{train_dir} holds no images (one folder per class, with .png, .jpg "
                         "... files in each)")
    size = opts.get("image_size")
    if size is None:
        size = probe.loader(probe.samples[0][0]).size[::-1]  # PIL gives (width, height)
    size = (size, size) if isinstance(size, int) else tuple(size)
    base = [transforms.Resize(size), transforms.ToTensor()]
    plain = datasets.ImageFolder(str(train_dir), transform=transforms.Compose(base))
    n = min(len(plain), int(opts.get("stats_images", 256)))
    picks = torch.linspace(0, len(plain) - 1, n).long().tolist()
    sample = torch.stack([plain[i][0] for i in picks])
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist()
    tf = transforms.Compose([*base, transforms.Normalize(mean, std)])
    train = datasets.ImageFolder(str(train_dir), transform=tf)
    test = datasets.ImageFolder(str(test_dir), transform=tf)
    if test.classes != train.classes:
        raise ValueError(f"{test_dir} has the class folders {', '.join(test.classes)}; "
                         f"{train_dir} has {', '.join(train.classes)}: they must be the same")
    y_tr = torch.as_tensor(train.targets, dtype=torch.int64)
    y_te = torch.as_tensor(test.targets, dtype=torch.int64)
    return RawData(Stream(train), y_tr, Stream(test), y_te, len(train.classes))


def imagefolder_dirs(cfg: DataConfig) -> tuple[Path, Path]:
    """(train folder, test folder) under data.path; ValueError saying what is missing."""
    if not cfg.path:
        raise ValueError("dataset 'imagefolder' needs data.path: a folder with train/ and test/ "
                         "(or val/), one sub-folder of images per class in each")
    folder = Path(cfg.path).expanduser()
    if not folder.is_dir():
        raise ValueError(f"data.path {cfg.path!r} is not a folder")
    train = folder / "train"
    test = next((folder / t for t in ("test", "val") if (folder / t).is_dir()), None)
    if not train.is_dir() or test is None:
        raise ValueError(f"{folder} needs train/ and test/ (or val/) folders, one sub-folder "
                         "of images per class in each")
    return train, test
