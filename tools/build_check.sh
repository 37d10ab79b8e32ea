#!/usr/bin/env bash
# Build the sdist and wheel, check their metadata, and install the wheel the way a user would: in
# a clean virtualenv with nothing else, then with each extra. Run by .ci/run and the CI build job.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/tools"
"$work/tools/bin/pip" install -q --upgrade pip
"$work/tools/bin/pip" install -q build twine
rm -rf dist
"$work/tools/bin/python" -m build --outdir dist . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
"$work/tools/bin/twine" check --strict dist/*

wheel=$(ls dist/llmpulse-*.whl)
sdist=$(ls dist/llmpulse-*.tar.gz)
# The wheel carries the package and its type marker, and nothing of the repository's tooling.
"$work/tools/bin/python" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1], sys.argv[2]
names = zipfile.ZipFile(wheel).namelist()
assert "llmpulse/py.typed" in names, "py.typed missing from the wheel"
assert "llmpulse/__init__.py" in names
stray = [n for n in names if n.split("/")[0] in {"tests", "tools", "scenarios", "benchmarks", "docs"}]
assert not stray, f"the wheel carries repository files: {stray[:5]}"
members = tarfile.open(sdist).getnames()
heavy = [m for m in members if "/.venv" in m or "/.sdk-suites" in m or "/demo-out" in m or "/site/" in m]
assert not heavy, f"the sdist carries local files: {heavy[:5]}"
print(f"wheel: {len(names)} files; sdist: {len(members)} files")
PY

# A clean virtualenv: the wheel alone, imported, with its version and CLI.
"$PYTHON" -m venv "$work/user"
"$work/user/bin/pip" install -q --upgrade pip
"$work/user/bin/pip" install -q "$wheel"
version=$("$work/user/bin/python" -c 'import llmpulse; print(llmpulse.__version__)')
cli=$("$work/user/bin/llmpulse" --version)
[ "$cli" = "llmpulse $version" ] || { echo "llmpulse --version says '$cli', the package $version"; exit 1; }
"$work/user/bin/python" - <<'PY'
import importlib.resources, llmpulse
assert importlib.resources.files("llmpulse").joinpath("py.typed").is_file(), "py.typed not installed"
missing = [name for name in llmpulse.__all__ if not hasattr(llmpulse, name)]
assert not missing, f"__all__ names missing: {missing}"
PY
# Each extra installs and brings what it is for.
"$work/user/bin/pip" install -q "$wheel[redis,otel,cli]"
"$work/user/bin/python" -c 'import redis, opentelemetry.trace, rich; import llmpulse.state; llmpulse.OtelSink'
echo "build check: $(basename "$wheel") and $(basename "$sdist") OK (llmpulse $version)"
