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


def loss_label(loss: Mapping[str, Any]) -> str:
    """A trial's EDF in a few words: ``dm(lam=0.5, beta=8)``, or for an emphasis schedule
    ``dm(lam=0.5, beta=8) -> dm(lam=2, beta=16) (linear 0-1)``. ``loss`` is a trial config's
    loss section, or anything with ``edf`` and optionally ``edf_end`` and ``ramp``."""
    start = edf_label(loss["edf"])
    if loss.get("edf_end") is None:
        return start
    ramp = loss.get("ramp") or {}
    where = ", in mean/std" if ramp.get("coords") == "moments" else ""
    return (f"{start} -> {edf_label(loss['edf_end'])} ({ramp.get('shape', 'linear')} "
            f"{ramp.get('start', 0.0):.3g}-{ramp.get('end', 1.0):.3g}{where})")


def fmt(v: Any, spec: str = ".4f") -> str:
    """A number for a table or a log line; "-" where there is none (None, NaN, infinity)."""
    if v is None or (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf")))):
        return "-"
    return format(v, spec)


def duration(seconds: Any, digits: int = 1) -> str:
    """A duration in the unit it reads best in: "42.0 s", "5.5 min", "2.0 h"; "-" for none."""
    if not isinstance(seconds, int | float) or seconds != seconds:
        return "-"
    for limit, unit, size in ((120, "s", 1), (7200, "min", 60), (float("inf"), "h", 3600)):
        if seconds < limit:
            return f"{seconds / size:.{digits}f} {unit}"
    return "-"  # infinite


def final_labels(final: Mapping[str, Any]) -> dict[str, str]:
    """The final stage's two rows, as its table and its learning curves name them."""
    return {"best": f"best: {loss_label(final['best'])} (trial {final['best']['trial']})",
            "ce": "CE (cce)"}


def final_stage_line(final: Mapping[str, Any]) -> str:
    """The final stage's result in one line, as the study prints it and status repeats it."""
    b, c = final["best"], final["ce"]
    return (f"final test accuracy: best EDF {100 * b['test_acc_mean']:.2f} ± "
            f"{100 * b['test_acc_std']:.2f}%, CE {100 * c['test_acc_mean']:.2f} ± "
            f"{100 * c['test_acc_std']:.2f}% (gain {100 * final['gain']:+.2f} points; "
            f"{final['seeds']} seed(s), full training set)")


def final_warning(final: Mapping[str, Any]) -> str | None:
    """A warning when the best EDF's final-stage seeds disagree by more than the threshold
    the stage recorded (None when they agree, or for a stage recorded without one)."""
    b = final.get("best") or {}
    if not b.get("unstable"):
        return None
    accs = ", ".join(f"{100 * r['test_acc']:.1f}" for r in b.get("runs") or []
                     if r.get("test_acc") is not None)
    return (f"warning: the best EDF's final-stage seeds disagree by {b['spread']:.1f} points "
            f"(test accuracy {accs}%; more than {final.get('unstable_points', 2.0):g}): its "
            "result depends on the seed. Rerun the final stage with more seeds (final.seeds), "
            "or export a steadier candidate (dm-search status shows the race).")


def lr_range(final: Mapping[str, Any]) -> tuple[float, float] | None:
    """The learning rates (lowest, highest) of the unbroken run of tested multiples around
    the main one at which the best EDF beat CE; None without a sensitivity run or when it
    lost at the main lr."""
    rows = list(final.get("lr_sensitivity") or [])
    main = next((i for i, r in enumerate(rows) if r["factor"] == 1.0), None)
    if main is None or rows[main]["best"] <= rows[main]["ce"]:
        return None
    lo = hi = main
    while lo > 0 and rows[lo - 1]["best"] > rows[lo - 1]["ce"]:
        lo -= 1
    while hi < len(rows) - 1 and rows[hi + 1]["best"] > rows[hi + 1]["ce"]:
        hi += 1
    return rows[lo]["lr_best"], rows[hi]["lr_best"]


def lr_range_line(final: Mapping[str, Any]) -> str | None:
    """How the best EDF against CE holds up when the learning rate moves, in one line."""
    rows = list(final.get("lr_sensitivity") or [])
    if not rows:
        return None
    cells = ", ".join(f"x{r['factor']:g} {100 * r['best']:.1f}% vs {100 * r['ce']:.1f}%"
                      for r in rows)
    span = lr_range(final)
    verdict = ("it loses to CE at its own lr" if span is None else
               f"it beats CE for lr {span[0]:g} to {span[1]:g}")
    return f"lr sensitivity (best EDF vs CE, test accuracy): {cells}; {verdict}"


def race_lines(record: Mapping[str, Any]) -> list[str]:
    """The race's result as the study prints it and status repeats it: the rule and the
    winner, a line per candidate, and a warning when the winner's runs disagree."""
    if not record.get("candidates"):
        return []
    lines = []
    for c in record["candidates"]:
        mark = "winner" if c["trial"] == record.get("winner") else (
            "out" if c.get("out") else "")
        lines.append(f"  trial {c['trial']} {c['label']}: mean {c['mean']:.4f} ± "
                     f"{c['std']:.4f} over {c['n']} run(s), spread {c['spread']:.1f} points"
                     + (f" ({mark})" if mark else ""))
    head = (f"race ({record['rule']} of each run's last-{record['window']}-epoch val_acc): "
            + (f"trial {record['winner']} wins" if record.get("winner") is not None
               else "undecided"))
    warn = [f"warning: trial {c['trial']}'s runs disagree by {c['spread']:.1f} points (more "
            f"than {record.get('unstable_points', 2.0):g}): its result "
            "depends on the seed" for c in record["candidates"]
            if c.get("unstable") and c["trial"] == record.get("winner")]
    return [head, *lines, *warn]


def reasons_in_words(by_reason: dict[str, int]) -> str:
    """``{"finished": 8, "early-stopped": 12}`` as "8 finished, 12 early-stopped"."""
    order = ["finished", "early-stopped", "duplicate", "failed", "interrupted", "running",
             "waiting"]
    keys = sorted(by_reason, key=lambda k: (order.index(k) if k in order else len(order), k))
    return ", ".join(f"{by_reason[k]} {k}" for k in keys) or "none yet"
