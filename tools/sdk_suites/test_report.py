# ruff: noqa: D103 - test names say what they check (as tests/ under the project config)
"""The comparison, the grouping and the exception list (``pytest tools/sdk_suites``; no SDK needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
from groups import UNCLASSIFIED, group_of

BASE = {
    "tests/test_client.py::TestOpenAI::test_retries_taken[0]": {"outcome": "passed"},
    "tests/test_client.py::TestOpenAI::test_something_new": {"outcome": "passed"},
    "tests/test_client.py::TestOpenAI::test_flaky_bare": {"outcome": "failed"},
    "tests/test_client.py::TestOpenAI::test_gone": {"outcome": "xfailed"},
    "tests/test_models.py::test_ok": {"outcome": "passed"},
}
WRAPPED = {
    "tests/test_client.py::TestOpenAI::test_retries_taken[0]": {
        "outcome": "failed",
        "clients": {"openai.OpenAI": {"wrapped": 1}},
    },
    "tests/test_client.py::TestOpenAI::test_something_new": {"outcome": "error"},
    "tests/test_client.py::TestOpenAI::test_flaky_bare": {"outcome": "passed"},
    "tests/test_models.py::test_ok": {"outcome": "passed"},
}


def _write(out: Path, exceptions: str) -> tuple[int, dict[str, object]]:
    for mode, results in (("baseline", BASE), ("wrapped", WRAPPED)):
        (out / f"openai-{mode}.json").write_text(json.dumps(results))
    (out / "openai-wrapped.clients.json.gw0").write_text(json.dumps({"openai.OpenAI": {"wrapped": 3}}))
    (out / "openai-wrapped.clients.json.gw1").write_text(json.dumps({"openai.OpenAI": {"fell_back": 1}}))
    why = {"openai.OpenAI": ["fell_back: unknown SDK internals"]}
    (out / "openai-wrapped.why.json.gw1").write_text(json.dumps(why))
    path = out / "exceptions.txt"
    path.write_text(exceptions)
    code = report.write(
        out,
        suites=["openai"],
        modes=["baseline", "wrapped"],
        versions={"openai": "3.57.0"},
        exceptions_path=path,
        known_classes=["openai.OpenAI", "openai.AsyncOpenAI", "anthropic.Anthropic"],
        scope="test",
    )
    return code, json.loads((out / "report.json").read_text())


def test_a_test_that_passes_bare_and_not_wrapped_is_new_and_fails_the_run(tmp_path: Path) -> None:
    code, data = _write(tmp_path, "")
    comparison = data["suites"]["openai"]["comparisons"]["wrapped"]  # type: ignore[index]

    assert code == 1
    # Failed, errored and missing (did not run) wrapped all count; failing bare does not.
    assert sorted(comparison["new"]) == [
        "tests/test_client.py::TestOpenAI::test_gone",
        "tests/test_client.py::TestOpenAI::test_retries_taken[0]",
        "tests/test_client.py::TestOpenAI::test_something_new",
    ]
    assert comparison["fail_bare_pass_wrapped"] == 1
    assert comparison["by_group"]["C"]["count"] == 1
    assert comparison["by_group"][UNCLASSIFIED]["functions"] == ["test_gone", "test_something_new"]
    assert comparison["by_class"] == {"openai.OpenAI": 1, "(none constructed)": 2}


def test_the_exception_list_subtracts_exact_ids_and_globs(tmp_path: Path) -> None:
    code, data = _write(
        tmp_path,
        "# comment\n\n"
        "openai tests/test_client.py::TestOpenAI::test_retries_taken[0]  # retries below the SDK\n"
        "openai tests/test_client.py::TestOpenAI::test_[sg]*  # brackets are literal, * is a glob\n"
        "openai tests/test_client.py::*::test_so*  # a glob\n"
        "openai tests/test_client.py::*::test_gone  # not run wrapped\n"
        "anthropic tests/test_client.py::*  # another suite: neither used nor stale\n"
        "openai tests/nothing.py::test_x  # stale\n",
    )

    assert code == 0
    assert data["new_failures"] == 0
    assert data["suites"]["openai"]["comparisons"]["wrapped"]["excepted"] == 3  # type: ignore[index]
    assert data["stale_exceptions"] == [
        "openai tests/test_client.py::TestOpenAI::test_[sg]*",
        "openai tests/nothing.py::test_x",
    ]


def test_per_class_counts_merge_the_workers_and_list_known_classes(tmp_path: Path) -> None:
    _code, data = _write(tmp_path, "")
    entry = data["suites"]["openai"]  # type: ignore[index]
    markdown = (tmp_path / "report.md").read_text()

    assert entry["modes"]["wrapped"]["classes"] == {"openai.OpenAI": {"wrapped": 3, "fell_back": 1}}
    assert entry["known_classes"] == ["openai.OpenAI", "openai.AsyncOpenAI"]
    assert "| openai.OpenAI | wrapped | 4 | 3 | 1 | 0 | 0 | 0 | 0 | 1 |" in markdown
    assert "| openai.AsyncOpenAI | wrapped | 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 |" in markdown
    assert "- wrapped, openai.OpenAI: `fell_back: unknown SDK internals`" in markdown
    candidates = (tmp_path / "exceptions-candidates.txt").read_text().splitlines()
    assert candidates[0].startswith("openai tests/test_client.py::TestOpenAI::test_gone  # unclassified")


def test_a_missing_run_is_exit_status_2(tmp_path: Path) -> None:
    (tmp_path / "openai-baseline.json").write_text(json.dumps(BASE))
    code = report.write(
        tmp_path,
        suites=["openai"],
        modes=["baseline", "wrapped"],
        versions={"openai": "3.57.0"},
        exceptions_path=tmp_path / "none.txt",
        known_classes=[],
        scope="test",
    )

    assert code == 2


def test_an_exception_line_without_a_reason_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "exceptions.txt"
    path.write_text("openai tests/test_client.py::test_x\n")

    with pytest.raises(SystemExit, match=r"exceptions.txt:1: expected"):
        report.Exceptions(path)


@pytest.mark.parametrize(
    ("nodeid", "group"),
    [
        ("tests/test_client.py::TestOpenAI::test_retries_taken[True-1]", "C"),
        ("tests/lib/test_credentials.py::test_401_refreshes_when_x", "B"),
        ("tests/test_x.py::test_request_timeout", "H"),
        ("tests/test_x.py::test_entirely_new_behaviour", UNCLASSIFIED),
    ],
)
def test_groups_match_the_test_name_without_parameters(nodeid: str, group: str) -> None:
    assert group_of(nodeid) == group


def test_parameters_do_not_match_a_group() -> None:
    assert group_of("tests/test_x.py::test_plain[timeout]") == UNCLASSIFIED
