"""The fault-injection suite (issue: reliability): every test here is marked `reliability` and
names its case with ``@pytest.mark.case("<number>", "<what>")``; the run ends with a table of
case and result."""

from __future__ import annotations

import pytest

_RESULTS: dict[tuple[str, str], list[str]] = {}


def pytest_collection_modifyitems(items):
    for item in items:
        if "reliability" in str(item.path):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.workflow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    case = item.get_closest_marker("case")
    if case is None:
        return
    key = (str(case.args[0]), case.args[1])
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _RESULTS.setdefault(key, []).append(report.outcome)


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.section("reliability cases")

    # Cases of the first suite are numbers ("11"); later issues number theirs "<issue>.<case>"
    # ("14.3"): sorted as numbers, part by part.
    def order(key):
        parts = key[0].split(".")
        return ([int(p) if p.isdigit() else 99 for p in parts], key)

    for key in sorted(_RESULTS, key=order):
        outcomes = _RESULTS[key]
        result = (
            "failed"
            if "failed" in outcomes
            else ("skipped" if all(o == "skipped" for o in outcomes) else "passed")
        )
        terminalreporter.write_line(f"{key[0]:>4}  {key[1]:<60} {result} ({len(outcomes)} test(s))")
