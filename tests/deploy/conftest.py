"""Fixtures of the tests of deploy/: Prometheus' binaries, from Debian's ``prometheus`` package.

Without them the tests that need them skip, with one line for them all (pytest groups skips
raised at one place with one reason): what to install.
"""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """The path of promtool."""
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("no promtool: apt-get install prometheus to check deploy/prometheus and the dashboard")
    return path


@pytest.fixture(scope="session")
def prometheus_binary(promtool: str) -> str:
    """The path of the Prometheus server (the same package as promtool)."""
    path = shutil.which("prometheus")
    if path is None:
        pytest.skip("no prometheus server: apt-get install prometheus to run the real scrape")
    return path
