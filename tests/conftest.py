"""Shared test set-up.

Under CI (CI=true) as root nothing may skip: a test that needs root, a compiler, qemu or
a real kernel must run there, so a skip is turned into a failure.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("CI") == "true" and os.geteuid() == 0


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under CI as root, which is a failure: {reason}"


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
