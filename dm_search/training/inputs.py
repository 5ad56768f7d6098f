"""Where a trial's inputs live: in memory as tensors, or on disk, read as training goes
(a :class:`Stream` over a torch Dataset). Labels are always held in memory as tensors."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset as TorchDataset

__all__ = ["Inputs", "RawData", "Stream", "take"]


class Stream(TorchDataset):
    """Inputs read from a torch Dataset on demand (from disk, by DataLoader workers) instead
    of held in memory: ``stream[i]`` is the input of the dataset's example ``indices[i]``.
    Labels are always held in memory as tensors (``y_*``), so that label noise, the splits and
    the diagnostics work as they do for in-memory data."""

    def __init__(self, dataset: Any, indices: Tensor | None = None) -> None:
        self.dataset = dataset
        self.indices = torch.arange(len(dataset)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Tensor:
        item = self.dataset[int(self.indices[i])]
        x = item[0] if isinstance(item, tuple | list) else item
        if not isinstance(x, Tensor):
            raise TypeError(f"the dataset's inputs must be tensors; item {int(self.indices[i])} "
                            f"is a {type(x).__name__} (add transforms.ToTensor() to it)")
        return x

    def subset(self, idx: Tensor) -> Stream:
        return Stream(self.dataset, self.indices[idx])

    def shape(self) -> tuple[int, ...]:
        return tuple(self[0].shape) if len(self) else ()

    def digest(self) -> bytes:
        """What identifies the inputs without reading them all: the files (path and size)
        where the dataset lists them, else its length and a few inputs."""
        h = hashlib.sha256(self.indices.numpy().tobytes())
        samples = getattr(self.dataset, "samples", None)
        if isinstance(samples, list) and samples and isinstance(samples[0], tuple):
            for i in self.indices.tolist():
                path = str(samples[i][0])
                h.update(path.encode())
                h.update(str(os.path.getsize(path)).encode() if os.path.exists(path) else b"")
        else:
            picks = sorted({0, len(self) // 2, len(self) - 1}) if len(self) else []
            for i in picks:
                h.update(self[i].contiguous().numpy().tobytes())
        return h.digest()


Inputs = Tensor | Stream


def take(x: Inputs, idx: Tensor) -> Inputs:
    """The examples ``idx`` of in-memory or streamed inputs."""
    return x.subset(idx) if isinstance(x, Stream) else x[idx]


@dataclass
class RawData:
    """A dataset as tensors. ``x_*`` are float32, already normalised (or a Stream of such
    inputs read from disk); ``y_*`` int64."""

    x_train: Inputs
    y_train: Tensor
    x_test: Inputs
    y_test: Tensor
    num_classes: int
    crop_pad: int = 0  # default augmentation for this dataset
    flip: bool = False


