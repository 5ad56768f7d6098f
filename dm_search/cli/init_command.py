"""`dm-search init`: a starter study spec and its trial config, written where the user works,
that run as they are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dm_search.cli.app import app, console, fail

__all__ = ["init"]

BASE = """\
# The trial every study trial starts from: data and label noise, network, loss, optimiser.
# Try it alone with: dm-search train base.yaml
data:
  name: mnist1d                      # embedded, offline; or digits, mnist, cifar10, npz, ...
  noise: {kind: symmetric, rate: 0.4}
  val_fraction: 0.2                  # the clean validation split every trial is judged on
  seed: 0
model: {name: cnn1d}                 # built-in: mlp, cnn1d, cnn2d, resnet20 ... resnet50
loss: {edf: {family: dm, lam: 0.5, beta: 8.0}, normalise: batch}   # the study replaces the EDF
optim: {epochs: 30, batch_size: 128, lr: 0.05, momentum: 0.9, weight_decay: 1.0e-4,
        schedule: cosine}
"""

STUDY = """\
# A dm-search study: which emphasis (EDF) trains the most robust classifier on base.yaml's data
# and noise? Run it with: dm-search submit study.yaml   (a few minutes on 2 CPU cores)
# Every field, with what it does: the shipped spec search_spaces/template.yaml
name: {name}
base: base.yaml                      # the trial config beside this file
space:
  families:
    dm: {{mode: [0.0, 0.75], spread: [4.0, 24.0]}}   # DM: where the emphasis sits, how sharp
    gce: {{mode: [0.2, 0.5]}}                         # generalised cross-entropy
baselines: [cce]                     # plain CE, run once at full budget, as the reference
n_trials: 12
max_concurrent: 2                    # trials at once; resources: per trial
resources: {{cpu: 1}}
final: {{enabled: true, seeds: 2}}     # retrain the best EDF and CE on the whole training set
# tracking: {{mlflow: {{experiment: {name}}}, tensorboard: true}}   # needs dm-search[mlflow]
"""


@app.command()
def init(
    folder: Annotated[
        Path, typer.Argument(help="Folder to write into (created if missing).")
    ] = Path("."),
    name: Annotated[str, typer.Option(help="The study's name.")] = "my-study",
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that exist.")] = False,
) -> None:
    """Write a commented starter study (study.yaml) and its trial config (base.yaml).

    Both run as they are: dm-search submit FOLDER/study.yaml
    """
    from dm_search.common.paths import creatable

    files = {folder / "base.yaml": BASE, folder / "study.yaml": STUDY.format(name=name)}
    there = [str(p) for p in files if p.exists()]
    if there and not force:
        raise fail(f"{', '.join(there)} already exist(s); nothing was written. Use --force to "
                   "overwrite, or give another folder")
    for path in files:
        problem = creatable(path)
        if problem:
            raise fail(f"cannot write {path}: {problem}")
    folder.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
        console.print(f"wrote {path}")
    console.print(f"next: dm-search submit {folder / 'study.yaml'}")
