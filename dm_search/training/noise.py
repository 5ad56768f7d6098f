"""Label noise and class imbalance: pure, seeded functions over label tensors.

Every function takes labels ``(N,)`` (int64) and a ``torch.Generator`` and returns new tensors;
nothing is modified in place and no global random state is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from dm_search.common.safe_load import load_plain

__all__ = [
    "CIFAR10_ASYMMETRIC",
    "CIFAR100_COARSE",
    "NoisyLabels",
    "asymmetric_noise",
    "check_symmetric_rate",
    "cifar100_pair_map",
    "labels_from_file",
    "long_tail_indices",
    "pairflip_map",
    "symmetric_noise",
]

# CIFAR-10 asymmetric noise of the wider literature: truck -> automobile, bird -> airplane,
# deer -> horse, cat <-> dog.
CIFAR10_ASYMMETRIC: dict[int, int] = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}

# CIFAR-100 fine label -> superclass (coarse label), as stored in the dataset's own files.
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip


@dataclass(frozen=True)
class NoisyLabels:
    """Result of corrupting labels.

    Attributes:
        labels: (N,) the labels training will see.
        corrupted: (N,) bool, True where ``labels`` differs from the clean label.
    """

    labels: Tensor
    corrupted: Tensor

    @property
    def rate(self) -> float:
        """The realised noise rate: the fraction of labels that were changed."""
        return float(self.corrupted.float().mean()) if len(self.corrupted) else 0.0


def _check(labels: Tensor, num_classes: int, rate: float) -> None:
    if labels.dim() != 1:
        raise ValueError(f"labels must have shape (N,); got {tuple(labels.shape)}")
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes; got {num_classes}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1]; got {rate!r}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes - 1}]; got [{int(labels.min())}, "
            f"{int(labels.max())}]"
        )


def check_symmetric_rate(rate: float, num_classes: int) -> None:
    """ValueError when symmetric noise at ``rate`` leaves the labels no information."""
    chance = (num_classes - 1) / num_classes
    if rate >= chance:
        # At (C-1)/C every label is equally likely whatever the true class: nothing to learn.
        raise ValueError(
            f"symmetric noise at rate {rate:g} with {num_classes} classes leaves the labels no "
            f"information (they carry none from rate {chance:.3g} = (C-1)/C on): use a rate "
            f"below {chance:.3g}")


def symmetric_noise(
    labels: Tensor, num_classes: int, rate: float, *, generator: torch.Generator
) -> NoisyLabels:
    """With probability ``rate`` a label moves to one of the OTHER classes, uniformly."""
    _check(labels, num_classes, rate)
    check_symmetric_rate(rate, num_classes)
    flip = torch.rand(labels.shape, generator=generator) < rate
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    noisy = torch.where(flip, (labels + shift) % num_classes, labels)
    return NoisyLabels(noisy, noisy != labels)


def asymmetric_noise(
    labels: Tensor, num_classes: int, rate: float, mapping: dict[int, int], *,
    generator: torch.Generator,
) -> NoisyLabels:
    """With probability ``rate`` a label of class ``c`` in ``mapping`` becomes ``mapping[c]``;
    classes not in ``mapping`` are never corrupted."""
    _check(labels, num_classes, rate)
    table = torch.arange(num_classes)
    for src, dst in mapping.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes):
            raise ValueError(f"noise map entry {src} -> {dst} is outside [0, {num_classes - 1}]")
        table[src] = dst
    flip = torch.rand(labels.shape, generator=generator) < rate
    noisy = torch.where(flip, table[labels], labels)
    return NoisyLabels(noisy, noisy != labels)


def pairflip_map(num_classes: int) -> dict[int, int]:
    """Generic asymmetric noise for any dataset: class c is confused with c + 1 (mod K)."""
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def cifar100_pair_map(*, generator: torch.Generator) -> dict[int, int]:
    """The paper's CIFAR-100 asymmetric noise: within each of the 20 superclasses, two of its
    five subclasses are picked at random and their labels swapped."""
    by_super: dict[int, list[int]] = {}
    for fine, coarse in enumerate(CIFAR100_COARSE):
        by_super.setdefault(coarse, []).append(fine)
    mapping: dict[int, int] = {}
    for coarse in sorted(by_super):
        members = by_super[coarse]
        pick = torch.randperm(len(members), generator=generator)[:2].tolist()
        a, b = members[pick[0]], members[pick[1]]
        mapping[a], mapping[b] = b, a
    return mapping


def labels_from_file(path: str | Path, *, key: str | None = None) -> Tensor:
    """Real noisy labels (CIFAR-N style) from a .npy, .npz, .pt/.pth or .csv file.

    ``key`` picks an array from an .npz or a dict saved in a .pt file (CIFAR-N's
    ``CIFAR-10_human.pt`` holds ``worse_label``, ``aggre_label``, ``random_label1``...).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"noisy-label file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    obj: object
    if suffix == ".npy":
        obj = np.load(path, allow_pickle=False)
    elif suffix == ".npz":
        obj = dict(np.load(path, allow_pickle=False))
    elif suffix in (".pt", ".pth"):
        obj = load_plain(path, "noisy-label file", numpy_arrays=True)
    elif suffix in (".csv", ".txt"):
        obj = np.loadtxt(path, dtype=np.int64, delimiter="," if suffix == ".csv" else None)
    else:
        raise ValueError(f"noisy-label file must be .npy, .npz, .pt, .pth, .csv or .txt; got "
                         f"{path.name!r}")
    if isinstance(obj, dict):
        if key is None or key not in obj:
            raise ValueError(
                f"{path.name} holds several arrays; choose one with key: "
                f"{', '.join(sorted(map(str, obj)))}" + ("" if key is None else f" (got {key!r})")
            )
        obj = obj[key]
    elif key is not None:
        raise ValueError(f"{path.name} holds a single array; remove key={key!r}")
    try:
        return torch.as_tensor(np.asarray(obj)).long().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"noisy-label file {path} holds {type(obj).__name__}, not an array "
                         "of integer labels") from None


def long_tail_indices(
    labels: Tensor, num_classes: int, ratio: float, *, generator: torch.Generator
) -> Tensor:
    """Indices of a long-tailed subset: class c keeps n_max * ratio^(-c / (K - 1)) examples,
    so the most frequent class has ``ratio`` times as many as the rarest. Sorted ascending."""
    if ratio < 1:
        raise ValueError(f"imbalance ratio must be >= 1; got {ratio!r}")
    counts = torch.bincount(labels, minlength=num_classes)
    n_max = int(counts.max())
    keep = []
    for c in range(num_classes):
        idx = torch.nonzero(labels == c).squeeze(1)
        n = min(len(idx), max(1, int(n_max * ratio ** (-c / max(num_classes - 1, 1)))))
        keep.append(idx[torch.randperm(len(idx), generator=generator)[:n]])
    return torch.cat(keep).sort().values
