"""``python -m conveyor``: the ``conveyor`` command without the console script."""

from conveyor.cli import main

main()
