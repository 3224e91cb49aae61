#!/usr/bin/env bash
# A longer schemathesis run over every route of the assembled app (tests/gateway/test_fuzz_api.py).
#
#   scripts/fuzz_api.sh            # 10x the default suite's examples per operation, on SQLite
#   scripts/fuzz_api.sh 30 --pg    # 30x, on a local PostgreSQL (scripts/start_postgres.sh, as root)
#
# Extra arguments after those go to pytest (e.g. -k "shop"). Cases are derandomized: a failure
# reproduces with the same scale.
set -euo pipefail
cd "$(dirname "$0")/.."
SCALE="${1:-10}"
shift || true
PYTHON="${PYTHON:-.venv/bin/python}"
ARGS=(-q tests/gateway/test_fuzz_api.py -p no:cacheprovider)
if [ "${1:-}" = "--pg" ]; then
    shift
    CONCIERGE_DATABASE_URL="$(bash scripts/start_postgres.sh)"
    export CONCIERGE_DATABASE_URL
    ARGS+=(-p postgres_plugin)
fi
CONCIERGE_FUZZ_EXAMPLES="$SCALE" PYTHONPATH="src:tests${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m pytest "${ARGS[@]}" "$@"
