"""How things read in text, without torch: EDF configs (the command line's light commands
label studies with these, and ``EDF`` uses them for its own ``repr`` and ``str``), numbers that
may be missing, and the final stage's one-line result."""

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


def fmt(v: Any, spec: str = ".4f") -> str:
    """A number for a table or a log line; "-" where there is none (None, NaN, infinity)."""
    if v is None or (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))):
        return "-"
    return format(v, spec)


def final_stage_line(final: Mapping[str, Any]) -> str:
    """The final stage's result in one line, as the study prints it and status repeats it."""
    b, c = final["best"], final["ce"]
    return (f"final test accuracy: best EDF {100 * b['test_acc_mean']:.2f} ± "
            f"{100 * b['test_acc_std']:.2f}%, CE {100 * c['test_acc_mean']:.2f} ± "
            f"{100 * c['test_acc_std']:.2f}% (gain {100 * final['gain']:+.2f} points; "
            f"{final['seeds']} seed(s), full training set)")
