"""pyproject.toml: metadata in the forms current build tools accept without warnings."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import conveyor

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text("utf-8"))


def test_the_license_is_an_spdx_string_not_a_table() -> None:
    # The table form ({ text = ... }) is deprecated by setuptools and refused after 2027-02-18.
    assert pyproject()["project"]["license"] == "Apache-2.0"


def test_the_build_needs_a_setuptools_that_reads_spdx_licenses() -> None:
    requires = pyproject()["build-system"]["requires"]
    [setuptools] = [r for r in requires if r.startswith("setuptools")]
    found = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", setuptools)
    assert found is not None and int(found.group(1)) >= 77, setuptools


def test_the_distribution_and_the_package_report_one_version() -> None:
    # `conveyor --version` prints conveyor.__version__; a release must bump both together.
    assert pyproject()["project"]["version"] == conveyor.__version__
