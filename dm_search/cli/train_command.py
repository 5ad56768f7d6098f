"""`dm-search train`: one trial from a trial config, outside any study."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from dm_search.cli.app import app, console, fail, kind_hint, writable, write_json
from dm_search.common.labels import fmt

if TYPE_CHECKING:
    from dm_search.training.config import TrialConfig

__all__ = ["train"]


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Trial config YAML (see examples/).")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override a field: a.b=value (repeatable)."),
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the full result as JSON here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train one configuration (one EDF, or an emphasis schedule) and report clean validation
    and test accuracy.

    Example: dm-search train examples/mnist1d_dm.yaml --set loss.edf.beta=12
    """

    from dm_search.training.config import ConfigError, load_trial_config
    from dm_search.training.data import DatasetUnavailable, prepare_data
    from dm_search.training.trainer import check_config

    try:
        cfg = load_trial_config(config, set_ or [])
        check_config(cfg)  # a wrong name or folder, found before the data loads
    except ConfigError as err:
        raise fail(kind_hint(config, "train") or str(err)) from None
    if json_out is not None:
        writable(json_out, "--json")  # now, not after the training whose result it holds
    schedule = cfg.loss.build_schedule()
    edf = repr(cfg.loss.build_edf()) if schedule is None else schedule.label()
    where = (f"[bold]{cfg.data.name}[/bold] noise={cfg.data.noise.kind}:{cfg.data.noise.rate}"
             if cfg.data else "[bold]the trainer's own data[/bold]")
    how = f"  trainer={cfg.trainer}" if cfg.trainer else f"  model={cfg.model.name}"
    console.print(f"{where}{how}  loss={edf} normalise={cfg.loss.normalise}", soft_wrap=True)
    try:
        data = prepare_data(cfg.data) if cfg.data else None
    except (ConfigError, DatasetUnavailable, OSError, ValueError) as err:
        raise fail(str(err)) from None
    result = _train_with_progress(cfg, data, quiet)
    _print_result(result)
    if json_out is not None:
        write_json(result.to_dict(), json_out)


def _train_with_progress(cfg: TrialConfig, data: Any, quiet: bool) -> Any:
    """run_trial with a progress bar (epochs, loss, accuracies, where the emphasis is)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from dm_search.common.plugins import describe_error
    from dm_search.training.config import ConfigError
    from dm_search.training.context import ReportError
    from dm_search.training.data import DatasetUnavailable
    from dm_search.training.trainer import TrialDiverged, run_trial, total_epochs

    schedule = cfg.loss.build_schedule()
    progress = Progress(
        TextColumn("[bold]epoch"), MofNCompleteColumn(), BarColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=quiet,
    )
    with progress:
        epochs = cfg.optim.epoch_budget if data is None else total_epochs(cfg, len(data.y_train))
        task = progress.add_task("train", total=epochs, info="")

        def report(m: dict[str, float]) -> None:
            info = (f"loss {fmt(m['train_loss'], '.3f')}  val {fmt(m['val_acc'])}  "
                    f"test {fmt(m['test_acc'])}  mem {fmt(m['memorised'])}")
            if schedule is not None:  # where the emphasis has moved to
                info += f"  mode {fmt(m['mode'], '.3f')}  spread {fmt(m['spread'], '.3g')}"
            progress.update(task, completed=int(m["epoch"]), info=info)

        try:
            return run_trial(cfg, report=report, data=data)
        except (ConfigError, DatasetUnavailable, OSError, ValueError) as err:
            # OSError: the data cache or a checkpoint could not be written (permissions)
            if cfg.trainer is None or isinstance(err, ConfigError | ReportError):
                raise fail(str(err)) from None
            raise fail(f"trainer {cfg.trainer} raised {describe_error(err)}", code=1) from None
        except TrialDiverged as err:
            raise fail(f"{err}. Lower optim.lr or pick a gentler EDF.", code=1) from None
        except Exception as err:
            if cfg.trainer is None:
                raise
            # A loop of one's own that raises: its last line and where, not a traceback.
            raise fail(f"trainer {cfg.trainer} raised {describe_error(err)}", code=1) from None


def _print_result(result: Any) -> None:
    """A finished trial's numbers as a table."""
    final = result.final
    table = Table(title="Trial result")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [
        ("best epoch (by clean val acc)", str(result.best_epoch)),
        ("best val acc", fmt(result.best_val_acc)),
        ("test acc at best epoch", fmt(result.test_acc_at_best)),
        ("final test acc", fmt(final["test_acc"])),
        ("final intact train acc", fmt(final["intact_acc"])),
        ("final memorised (noisy labels fitted)", fmt(final["memorised"])),
        ("final p clean / p noisy", f"{fmt(final['p_clean'])} / {fmt(final['p_noisy'])}"),
        ("final noisy weight share", fmt(final["noisy_weight_share"])),
        ("realised noise rate", fmt(result.noise_rate)),
        ("epochs", str(result.epochs_completed)),
        ("wall time s", f"{result.wall_s:.1f}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
