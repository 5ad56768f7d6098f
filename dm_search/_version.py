"""The package version, in a module that imports nothing (the CLI's --version stays fast)."""

__version__ = "0.1.0"
