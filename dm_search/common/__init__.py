"""Small helpers shared by every layer: wording (``labels``), errors, registries, paths, records,
safe loading of plain data, provenance.

The bottom layer: imports the standard library only (``safe_load`` also numpy and torch, for
the files it reads), never another part of dm_search.
"""
