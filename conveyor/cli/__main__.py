"""``python -m conveyor.cli``: the ``conveyor`` command (workers re-execute themselves so)."""

from conveyor.cli import main

main()
