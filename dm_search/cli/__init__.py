"""The `dm-search` command line.

``app`` holds the Typer application and what the commands share; each command group lives in a
module of its own (``edf_commands``, ``train_command``, ``study_commands``, ``result_commands``)
and registers itself on import (``init_command`` too); ``summary`` prints a study's summary.

The top layer: it may import every other part of dm-search, but only inside the commands, so
that ``--help``, ``list`` and ``status`` start without torch or ray.
"""

from __future__ import annotations

from dm_search.cli.app import app

# Importing a command module registers its commands, in this order in --help.
# isort: off
from dm_search.cli import init_command, train_command, study_commands, result_commands, edf_commands  # noqa: F401,E501
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
