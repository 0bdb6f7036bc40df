#!/usr/bin/env bash
# import-linter over the installed package layout (see tools/import_view.py).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${VENV_BIN:-$root/.venv/bin}"
view="$(mktemp -d)"
trap 'rm -rf "$view"' EXIT
"$bin/python" "$root/tools/import_view.py" "$view/src" > /dev/null
# run from inside the view: lint-imports puts the working directory first on sys.path
cd "$view/src"
PYTHONPATH="$view/src" "$bin/lint-imports" --no-cache --config "$root/.importlinter"
