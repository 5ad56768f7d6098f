"""A study's summary as the terminal shows it: its trials, references, race, final stage
and failures."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from dm_search.cli.app import console, err_console, fail
from dm_search.common.labels import (
    duration,
    edf_repr,
    final_stage_line,
    final_warning,
    fmt,
    lr_range_line,
    race_lines,
)

__all__ = []


# ====================================================================== studies
def _coords(t: dict) -> str:
    def f(key: str, spec: str) -> str:
        return "-" if t.get(key) is None else format(t[key], spec)

    return (f"mode {f('mode', '.3f')}  spread {f('spread', '.3g')}  mean {f('mean', '.3f')}  "
            f"std {f('std', '.3f')}")


def _driver_line(driver: dict | None) -> str | None:
    """Whether a study's driver runs, from its heartbeat in the database."""
    if not driver:
        return None
    where = f"pid {driver['pid']} on {driver['host']}"
    ago = f"{duration(driver['age_s'], 0)} ago"
    again = f" Resume it with: {driver['resume']}" if driver.get("resume") else ""
    return {
        "running": f"running: driver {where}, last heartbeat {ago}",
        "gone": f"driver gone: {where} last reported {ago}, while trials ran.{again}",
        "interrupted": f"stopped by a signal {ago}.{again}",
        "failed": f"the driver stopped with an error {ago}.{again}",
    }.get(driver["state"])


def _ramp(schedule: dict) -> str:
    r = schedule["ramp"]
    return f"{r['shape']} ramp {r['start']:g}-{r['end']:g} of the budget"


def print_summary(summary: dict, driver: bool = False) -> None:
    from dm_search.common.labels import reasons_in_words

    console.print(
        f"[bold]{summary['name']}[/bold]: {summary['searched']} of {summary['n_trials'] or '?'} "
        f"searched trial(s) + {len(summary.get('references') or [])} reference(s) | "
        f"{reasons_in_words(summary['by_reason'])}"
    )
    best = summary["best"]
    if best:
        edf = edf_repr(best["edf"])
        if best.get("schedule"):
            edf = f"{edf} -> {edf_repr(best['schedule']['edf_end'])} ({_ramp(best['schedule'])})"
        console.print(f"best trial {best['number']}: {edf}  {_coords(best)}  "
                      f"val_acc {best['value']:.4f}  "
                      f"test_acc {fmt(best['test_acc'])}")
    else:
        console.print("best trial: none has run its full budget yet")
    for ref in summary.get("references") or []:
        console.print(f"reference trial {ref['number']} ({ref['stop_reason']}): "
                      f"{edf_repr(ref['edf'])}  {_coords(ref)}  val_acc {fmt(ref['value'])}  "
                      f"test_acc {fmt(ref['test_acc'])}")
    if summary["families"]:
        table = Table(title="by family")
        for col in ("family", "trials", "full budget", "best val acc"):
            table.add_column(col, justify="left" if col == "family" else "right")
        for fam, f in sorted(summary["families"].items(),
                             key=lambda kv: -(kv[1]["best_val_acc"] or -1)):
            table.add_row(fam, str(f["trials"]), str(f["finished"]),
                          fmt(f["best_val_acc"]))
        console.print(table)
    for race_line in race_lines(summary.get("race") or {}):
        console.print(escape(race_line), soft_wrap=True,
                      style="bold yellow" if race_line.startswith("warning") else None)
    final = summary.get("final_stage")
    if final:
        console.print(final_stage_line(final))
        warning = final_warning(final)
        if warning:
            console.print(escape(warning), soft_wrap=True, style="bold yellow")
        lr_line = lr_range_line(final)
        if lr_line:
            console.print(lr_line, soft_wrap=True)
    line = _driver_line(summary.get("driver")) if driver else None
    if line:
        console.print(escape(line), soft_wrap=True)


def report_failures(summary: dict) -> None:
    """Say how many trials failed and why; exit 1 when no searched trial succeeded."""
    failed = summary.get("failures") or {}
    if not failed:
        return
    n = sum(failed.values())
    reasons = "; ".join(f"{count} x {reason}" for reason, count in failed.items())
    by = summary["by_reason"]
    worked = by.get("finished", 0) + by.get("early-stopped", 0)
    if worked == 0:
        raise fail(f"every trial failed ({reasons}). If the cause was in the spec, fix it and "
                    "submit under a new --name (a study keeps its spec); if it was outside "
                    "(data, machine), resubmit with --resume: the failed trials stay on record.",
                    code=1)
    err_console.print(f"[yellow]warning:[/yellow] {n} trial(s) failed: {escape(reasons)}",
                      soft_wrap=True)
