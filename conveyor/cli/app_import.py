"""The App named by ``--app package.module:attribute``, imported for ``conveyor worker``.

A module that fails at import is the user's own code failing: the report shows their
frames and their error, not the importlib and CLI frames above them.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

import typer

import conveyor
from conveyor.app import App
from conveyor.cli.common import print_error

_OURS = (
    str(Path(conveyor.__file__).parent) + os.sep,
    str(Path(importlib.__file__).parent) + os.sep,
    "<frozen importlib",
)
"""Where frames that are not the user's come from: Conveyor itself and the import system."""


def load_app(reference: str) -> App:
    """Import ``package.module:attribute`` and check that it is an App."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise typer.BadParameter("use the form package.module:app", param_hint="--app")
    if os.getcwd() not in sys.path:  # like uvicorn and celery: the app may live right here
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if not _names_the_module(exc, module_name):
            _report_import_failure(module_name, exc)  # a module *their* code imports
        raise typer.BadParameter(
            f"cannot import {module_name}: {exc}", param_hint="--app"
        ) from None
    except Exception as exc:  # SyntaxError included: anything their module raised
        _report_import_failure(module_name, exc)
    app: Any = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise typer.BadParameter(f"{reference} is not a conveyor.App", param_hint="--app")
    return app


def _names_the_module(exc: ModuleNotFoundError, module_name: str) -> bool:
    """True when the missing module is the one asked for (or a package above it)."""
    missing = exc.name or ""
    return module_name == missing or module_name.startswith(missing + ".")


def _report_import_failure(module_name: str, exc: Exception) -> NoReturn:
    report = traceback.TracebackException.from_exception(exc)
    report.stack = traceback.StackSummary.from_list(
        [frame for frame in report.stack if not frame.filename.startswith(_OURS)]
    )
    print_error(f"--app: importing {module_name} raised {type(exc).__name__}:")
    typer.echo("".join(report.format()).rstrip("\n"), err=True)
    raise typer.Exit(1)
