#!/usr/bin/env bash
# Gateway throughput, before against after, side by side: support turns, shop turns and chat completions
# offered at 500/s, canned instant models, the load client in its own process (scripts/load_test.py).
#
#   git worktree add /tmp/base <commit-before>
#   scripts/bench_gateway_turns.sh /tmp/base/src [OUT_DIR] [REPS]
#
# Each workload runs before (1 gateway process), after (1 process) and after with --workers 2, in turn,
# REPS times (default 2), so the machine's load drifts over all three alike. One line per run; the
# JSON of each run goes to OUT_DIR (default out/bench-gateway-turns).
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE="${1:?usage: $0 BEFORE_SRC [OUT_DIR] [REPS]}"
OUT="${2:-out/bench-gateway-turns}"
REPS="${3:-2}"
mkdir -p "$OUT"
run() {  # label src workers mix [load_test options]
    local label=$1 src=$2 workers=$3 mix=$4
    shift 4
    PYTHONPATH="$src" timeout 300 .venv/bin/python scripts/load_test.py --spawn --workers "$workers" --hub instant \
        --mix "$mix" --concurrency 32 "$@" --json "$OUT/$label.json" > "$OUT/$label.log" 2>&1
    echo "$label | $(grep -E '^CPU per' "$OUT/$label.log") | $(grep -E '^all ' "$OUT/$label.log" | tr -s ' ') |" \
         "$(grep -E '^load average' "$OUT/$label.log")"
}
for rep in $(seq 1 "$REPS"); do
    for kind in support shop chat500; do
        case $kind in
            support) mix=chat=0,shop=0,support=1; opts=(--duration 20) ;;
            shop) mix=chat=0,shop=1,support=0; opts=(--duration 20) ;;
            chat500) mix=chat=1,shop=0,support=0; opts=(--duration 15 --rate 500) ;;
        esac
        run "$kind-before-$rep" "$BEFORE" 1 "$mix" "${opts[@]}"
        run "$kind-after1-$rep" src 1 "$mix" "${opts[@]}"
        run "$kind-after2-$rep" src 2 "$mix" "${opts[@]}"
    done
done
