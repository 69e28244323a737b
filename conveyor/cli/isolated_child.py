"""The isolated child's process entry: ``python -m conveyor.cli.isolated_child``.

The child's composition root, like ``worker_root`` is the worker's: it hands the child
(``conveyor.worker.isolated_child``) the logging set-up of the observability layer.
"""

from __future__ import annotations

import sys

from conveyor.observability.logging import configure_logging
from conveyor.worker.isolated_child import main

if __name__ == "__main__":
    sys.exit(main(configure_logging))
