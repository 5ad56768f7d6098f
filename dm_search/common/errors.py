"""Errors the user can act on, in a module that imports nothing (light commands use it)."""


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field and the fix."""
