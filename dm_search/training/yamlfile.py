"""YAML files as the configs and specs are written in: read in bounded time and memory
whatever they hold, written so that they read back to equal data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from dm_search.common.errors import ConfigError

__all__ = ["MAX_YAML_BYTES", "MAX_YAML_DEPTH", "MAX_YAML_NODES", "dump_yaml", "read_yaml",
           "safe_load_bounded"]


class _Dumper(yaml.SafeDumper):
    pass


def _represent_float(dumper: yaml.SafeDumper, value: float) -> yaml.Node:
    # PyYAML writes 5e-07, which YAML 1.1 (and PyYAML itself) reads back as a string.
    text = repr(value)
    if "e" in text and "." not in text and text not in ("inf", "-inf", "nan"):
        mantissa, exponent = text.split("e")
        return dumper.represent_scalar("tag:yaml.org,2002:float", f"{mantissa}.0e{exponent}")
    return yaml.SafeDumper.represent_float(dumper, value)


_Dumper.add_representer(float, _represent_float)


def dump_yaml(data: Any) -> str:
    """YAML text that reads back to equal data (floats included), keys in their order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False)


# A config file is a page of settings: these bounds are far above any real one and keep a
# hostile or broken file (nested aliases: a few hundred bytes that expand to billions of
# nodes) from holding a command for minutes and gigabytes.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_NODES = 200_000
# PyYAML's scanner slows down with the square of the flow nesting ([[[...): 4,000 levels take
# seconds, a few megabytes of them hours. Counted first, in one pass over the brackets.
MAX_YAML_DEPTH = 100


def safe_load_bounded(text: str, source: str) -> Any:
    """``yaml.safe_load(text)`` in bounded time and memory: the document's size with every
    alias expanded is counted on the parsed graph (each node once) before anything is built.
    Raises ConfigError saying what was too large."""
    if len(text) > MAX_YAML_BYTES:
        raise ConfigError(f"{source} is {len(text) / 1e6:.1f} MB; a config is at most "
                          f"{MAX_YAML_BYTES // 2**20} MiB")
    depth = 0
    for found in re.finditer(r"[\[\]{}]", text):  # stops at the first level too deep
        depth = depth + 1 if found.group() in "[{" else max(0, depth - 1)
        if depth > MAX_YAML_DEPTH:
            raise ConfigError(f"{source} nests brackets ([ or {{) more than {MAX_YAML_DEPTH} "
                              "deep; a config nests a few levels")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(f"{source} is nested too deeply to be a config") from None
    finally:
        loader.dispose()


def _check_expanded_size(root: yaml.Node, source: str) -> None:
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        sizes[id(node)] = 1  # a node that contains itself counts once (PyYAML builds a cycle)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        total = min(total, MAX_YAML_NODES + 1)
        sizes[id(node)] = total
        return total

    if size(root) > MAX_YAML_NODES:
        raise ConfigError(f"{source} expands to more than {MAX_YAML_NODES:,} values once its "
                          "aliases (*name) are expanded; a config this size is a mistake or an "
                          "attack: write the values out, or use fewer nested aliases")


def read_yaml(path: str | Path, *, sections: str = "data, model, loss, optim",
              example: str = "examples/mnist1d_dm.yaml") -> dict[str, Any]:
    """A YAML file's mapping; ``sections`` and ``example`` tell the user what it should hold
    (a study spec's are not a trial config's)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{str(path)!r} is a directory: give the YAML file in it (e.g. "
                          f"{path / 'config.yaml'})")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = safe_load_bounded(path.read_text(encoding="utf-8"), str(path))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path} as a YAML text file: {err}") from None
    if data is None:
        # An empty file would otherwise train silently on every default.
        raise ConfigError(f"{path} is empty: give at least the sections you mean to set "
                          f"({sections}); see {example}")
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections ({sections}...)")
    return data
