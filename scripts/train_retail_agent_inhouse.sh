#!/usr/bin/env bash
# Reproduce the committed in-house model `retail-agent-inhouse` (src/concierge/models/inhouse/retail-agent-inhouse/):
# a LoRA adapter on the embedded SmolLM2-135M-Instruct that drives the constrained agent mode in the compact
# agent prompt (concierge-agent-v1: tool lines, a window of the conversation, one JSON action a step).
# Fixed seed; under 30 minutes on 2 busy CPU cores, minutes on a GPU.
#
#   scripts/train_retail_agent_inhouse.sh            # build data, train, export, publish
#   scripts/train_retail_agent_inhouse.sh --resume   # continue an interrupted run from its last checkpoint
#
# Training data: one example per agent step of the gold replays of the τ-bench v1 retail train tasks
# (train dataset --kind agent_steps), read from the shared data folder (CONCIERGE_SHARED_DATA, default
# ../shared/data) and never copied into the project. 110 steps x 2 examples sees 220 of the ~2300 steps:
# what 30 minutes of the 2 cores allow (about 8 s an example of ~800 tokens). Measured end to end by
# scripts/proof_agent_modes.py on tasks it was not trained on (docs/benchmarks.md). Needs the train extra: make install-train.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DATA="${CONCIERGE_SHARED_DATA:-$ROOT/../shared/data}"
WORK="${WORK:-${CONCIERGE_HOME:-$HOME/.concierge}/train/retail-agent-inhouse}"
THREADS="${THREADS:-1}"  # on a shared CPU one torch thread beats two
STEPS="${STEPS:-110}"
TRAIN_TASKS="$DATA/tau_v1/retail/tasks_train.json"
DB_DIR="$DATA/tau2/retail"

for f in "$TRAIN_TASKS" "$DB_DIR/db.json"; do
  [[ -f "$f" ]] || { echo "missing $f (set CONCIERGE_SHARED_DATA to the shared data folder)" >&2; exit 2; }
done
mkdir -p "$WORK"
cd "$ROOT"

"$PY" -m concierge.commands.train dataset --kind agent_steps --domain retail --data-dir "$DB_DIR" --seed 0 \
  --tasks "$TRAIN_TASKS" --out "$WORK/agent_steps_tau_v1_train.jsonl"

"$PY" -m concierge.commands.train run \
  --data "$WORK/agent_steps_tau_v1_train.jsonl" --base embedded:smollm2 --out "$WORK/run" \
  --steps "$STEPS" --batch-size 2 --lr 4e-4 --warmup 10 --rank 16 --alpha 32 --seed 0 \
  --max-length 1024 --save-every 10 --threads "$THREADS" --dtype f16 \
  --alias retail-agent-inhouse --publish \
  --description "SmolLM2-135M-Instruct + LoRA: retail constrained agent steps, compact prompt (τ-bench v1 retail train gold replays)" \
  "$@"
