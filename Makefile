# Every target creates/refreshes its own virtualenv, so `make demo` and
# `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

LEGACY       ?= .venv-legacy
LEGACY_STAMP := $(LEGACY)/.installed
# The smoke subset run on the previous SDK majors (httpx stack).
LEGACY_TESTS := tests/test_calls.py tests/test_streaming.py tests/test_context.py tests/test_policies.py

# Frameworks on top of the SDKs (tests/frameworks/): one virtualenv on the project's SDK releases,
# and one for instructor, whose jiter pin holds openai at 3.3.0.
FRAMEWORKS         ?= .venv-frameworks
FRAMEWORKS_STAMP   := $(FRAMEWORKS)/.installed
INSTRUCTOR         ?= .venv-frameworks-instructor
INSTRUCTOR_STAMP   := $(INSTRUCTOR)/.installed
FRAMEWORK_PYTEST   := pytest -q -p no:cacheprovider

# The documentation site (mkdocs.yml), built by Zensical in strict mode: a broken link, anchor,
# snippet or API reference fails it.
DOCS         ?= .venv-docs
DOCS_STAMP   := $(DOCS)/.installed
# Those frameworks' files run in their own virtualenvs (make frameworks, frameworks-ci), so make
# test does not collect them: nothing is skipped for want of a package. openai-agents is in the
# dev extras and runs in make test.
FRAMEWORK_ONLY     := $(foreach f,instructor langchain litellm pydantic_ai,--ignore=tests/frameworks/test_$(f).py)

.PHONY: venv demo test lint typecheck pytest test-legacy fidelity-long bench scenarios clean frameworks frameworks-ci \
	sdk-suites sdk-contract docs build-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(LEGACY_STAMP): pyproject.toml requirements/legacy.txt
	$(PYTHON) -m venv $(LEGACY)
	$(LEGACY)/bin/pip install -q --upgrade pip
	$(LEGACY)/bin/pip install -q -e . -r requirements/legacy.txt
	touch $(LEGACY_STAMP)

$(FRAMEWORKS_STAMP): pyproject.toml requirements/frameworks.txt
	$(PYTHON) -m venv $(FRAMEWORKS)
	$(FRAMEWORKS)/bin/pip install -q --upgrade pip
	$(FRAMEWORKS)/bin/pip install -q -e . -r requirements/frameworks.txt
	touch $(FRAMEWORKS_STAMP)

$(INSTRUCTOR_STAMP): pyproject.toml requirements/frameworks-instructor.txt
	$(PYTHON) -m venv $(INSTRUCTOR)
	$(INSTRUCTOR)/bin/pip install -q --upgrade pip
	$(INSTRUCTOR)/bin/pip install -q -e . -r requirements/frameworks-instructor.txt
	touch $(INSTRUCTOR_STAMP)

$(DOCS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(DOCS)
	$(DOCS)/bin/pip install -q --upgrade pip
	$(DOCS)/bin/pip install -q -e '.[docs]'
	touch $(DOCS_STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/llmpulse demo

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks scenarios
	$(BIN)/ruff format --check src tests examples benchmarks scenarios

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider --cov --cov-report=term --cov-fail-under=90 $(FRAMEWORK_ONLY)

test-legacy: $(LEGACY_STAMP)
	$(LEGACY)/bin/pytest -q -p no:cacheprovider $(LEGACY_TESTS)

test: lint typecheck pytest test-legacy

# The site goes to site/ (open site/index.html); `$(DOCS)/bin/zensical serve` previews it live.
docs: $(DOCS_STAMP)
	$(DOCS)/bin/zensical build --strict --clean

# The sdist and wheel, checked and installed in a clean virtualenv (tools/build_check.sh).
build-check:
	PYTHON=$(PYTHON) tools/build_check.sh

# Each framework, bare client vs wrapped, sync/async, streamed or not (docs/compatibility.md).
frameworks: $(FRAMEWORKS_STAMP) $(INSTRUCTOR_STAMP)
	$(FRAMEWORKS)/bin/$(FRAMEWORK_PYTEST) tests/frameworks --ignore=tests/frameworks/test_instructor.py
	$(INSTRUCTOR)/bin/$(FRAMEWORK_PYTEST) tests/frameworks/test_instructor.py

# CI's subset (.ci/run, after `make test`): a streamed and a non-streamed case of each framework.
frameworks-ci: $(FRAMEWORKS_STAMP) $(INSTRUCTOR_STAMP)
	$(FRAMEWORKS)/bin/$(FRAMEWORK_PYTEST) -m frameworks_ci tests/frameworks --ignore=tests/frameworks/test_instructor.py
	$(INSTRUCTOR)/bin/$(FRAMEWORK_PYTEST) -m frameworks_ci tests/frameworks/test_instructor.py

# Bare SDK vs wrapped client on 5,000 random schedules instead of the suite's 500 (minutes).
fidelity-long: $(STAMP)
	FIDELITY_SCHEDULES=5000 $(BIN)/pytest -q -p no:cacheprovider tests/test_fidelity.py

bench: $(STAMP)
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/policies.py
	$(BIN)/python benchmarks/report.py

# The field's scenarios, measured against the fake provider (minutes; not part of `make test`).
scenarios: $(STAMP)
	$(BIN)/python scenarios/run.py

# The SDKs' own offline test suites, bare and with every client wrapped (tools/sdk_suites/; own
# virtualenv .venv-sdk-suites and sdists in .sdk-suites/). Fails on a wrapped-only failure that is
# not in tools/sdk_suites/exceptions.txt. Full suites, three modes: about an hour.
sdk-suites:
	$(PYTHON) tools/sdk_suites/run.py

# The client, retry, streaming, upload and auth test files, bare and wrapped-neutral (minutes; CI).
sdk-contract:
	$(PYTHON) tools/sdk_suites/run.py --contract --modes baseline wrapped-neutral

clean:
	rm -rf $(VENV) $(LEGACY) $(FRAMEWORKS) $(INSTRUCTOR) .coverage htmlcov .mypy_cache .ruff_cache .pytest_cache
