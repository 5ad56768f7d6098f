"""``python -m dm_search.cli``: the dm-search command."""

from dm_search.cli import main

main()
