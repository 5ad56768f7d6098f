"""How an EDF config reads in text, without building the EDF (and so without torch): the
command line's light commands label studies with these, and ``EDF`` uses them for its own
``repr`` and ``str``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def edf_repr(config: Mapping[str, Any]) -> str:
    """``EDF('dm', lam=0.5, beta=8.0)`` from ``{"family": "dm", "lam": 0.5, "beta": 8.0}``."""
    params = {k: v for k, v in config.items() if k != "family"}
    args = ", ".join(f"{k}={v!r}" for k, v in params.items())
    return f"EDF({config['family']!r}{', ' if args else ''}{args})"


def edf_label(config: Mapping[str, Any]) -> str:
    """A short label for plots and logs: ``dm(lam=0.5, beta=8)``."""
    params = ", ".join(f"{k}={v:.4g}" for k, v in config.items() if k != "family")
    return f"{config['family']}({params})" if params else str(config["family"])
