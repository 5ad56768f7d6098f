"""torch.load for files a user points dm-search at: plain data comes back, no code runs.

A .pt file is a pickle, and unpickling one can call any function it names. Every .pt file
dm-search reads (a trial checkpoint, a noisy-label file) therefore goes through
``torch.load(weights_only=True)``, which builds tensors, numbers, strings and lists, tuples
and dicts of them, and refuses everything else before calling it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load_plain"]


def _numpy_array_globals() -> list[Callable[..., Any] | tuple[Callable[..., Any], str]]:
    """What unpickling a numeric NumPy array calls, under NumPy 1's and NumPy 2's names.

    CIFAR-N ships its labels as NumPy arrays inside a .pt file. Rebuilding one only allocates
    an array and copies raw bytes into it; object arrays (which hold pickled Python objects)
    stay refused because their dtype is not listed.
    """
    reduced = np.empty(0).__reduce__()  # (_reconstruct, ...), wherever this NumPy keeps it
    assert isinstance(reduced, tuple)
    reconstruct = reduced[0]
    numeric = np.typecodes["AllInteger"] + np.typecodes["AllFloat"] + "?"
    return [
        (reconstruct, "numpy.core.multiarray._reconstruct"),
        (reconstruct, "numpy._core.multiarray._reconstruct"),
        np.ndarray,
        np.dtype,
        *{type(np.dtype(code)) for code in numeric},
    ]


def _reason(err: BaseException) -> str:
    # torch wraps the unpickler's own one-line reason in a page of advice that ends in
    # "load it with weights_only=False", which is the one thing not to do here.
    inner = err.__context__ if isinstance(err, pickle.UnpicklingError) else None
    cause = inner or err
    first = str(cause).strip().split("\n")[0].split(". ")[0]
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def load_plain(path: Path, what: str, *, numpy_arrays: bool = False) -> Any:
    """``torch.load(path)`` onto the CPU with ``weights_only=True``.

    Args:
        path: the file.
        what: what the file is meant to be ("checkpoint"), for the message.
        numpy_arrays: also accept numeric NumPy arrays (noisy-label files).

    Raises:
        ValueError: naming the file, when it is empty, not a PyTorch file, truncated, or
            holds anything but plain data (a class, a function: how a pickle runs code).
    """
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty")
    allowed = _numpy_array_globals() if numpy_arrays else []
    # Opened here so that a file that cannot be opened says so itself; past that, anything
    # that fails is the content, and a damaged file can fail in any layer of the reader.
    with path.open("rb") as f:
        try:
            with torch.serialization.safe_globals(allowed):
                return torch.load(f, map_location="cpu", weights_only=True)
        except Exception as err:
            arrays = "tensors, numeric NumPy arrays" if numpy_arrays else "tensors"
            raise ValueError(
                f"{what} {path} cannot be loaded safely ({_reason(err)}): dm-search reads "
                f"only {arrays}, numbers, strings and lists or dicts of them from a .pt file, "
                "and refuses anything else rather than unpickle it, since unpickling can run "
                "code"
            ) from None
