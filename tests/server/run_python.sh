#!/bin/sh
# Runs a Python server test with the venv that scripts/test.sh makes (the pinned `openai` client);
# skips (exit 77) loudly when that venv is absent, so a build without network still runs the C tests.
# Usage: run_python.sh PYTHON SCRIPT ARGS...
py=$1
shift
if ! [ -x "$py" ] || ! "$py" -c "import openai" 2>/dev/null; then
    echo "SKIP: $py with the openai package is absent (scripts/test.sh creates build/.venv)"
    exit 77
fi
exec "$py" "$@"
