#!/usr/bin/env bash
# Reproduce the committed in-house model `retail-inhouse` (src/concierge/models/inhouse/retail-inhouse/):
# a LoRA adapter on the embedded SmolLM2-135M-Instruct that turns a retail support conversation into a
# guided-mode command {intent, slots}. Fixed seed; about 30 minutes on 2 busy CPU cores, minutes on a GPU.
#
#   scripts/train_retail_inhouse.sh             # build data, train, export, check, measure, publish
#   scripts/train_retail_inhouse.sh --resume    # continue an interrupted run from its last checkpoint
#
# Training data: τ-bench v1 retail train tasks (500); held-out measurement: τ² retail train tasks (74).
# Both are read from the shared data folder (CONCIERGE_SHARED_DATA, default ../shared/data) and never
# copied into the project; datasets and checkpoints go to $WORK (default $CONCIERGE_HOME/train/...).
# Needs the train extra: make install-train.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
DATA="${CONCIERGE_SHARED_DATA:-$ROOT/../shared/data}"
WORK="${WORK:-${CONCIERGE_HOME:-$HOME/.concierge}/train/retail-inhouse}"
THREADS="${THREADS:-1}"  # on a shared CPU one torch thread beats two (measured: 1.4 s vs 8-15 s a step)
TRAIN_TASKS="$DATA/tau_v1/retail/tasks_train.json"
EVAL_TASKS="$DATA/tau2/retail/tasks_train.json"

for f in "$TRAIN_TASKS" "$EVAL_TASKS"; do
  [[ -f "$f" ]] || { echo "missing $f (set CONCIERGE_SHARED_DATA to the shared data folder)" >&2; exit 2; }
done
mkdir -p "$WORK"
cd "$ROOT"

"$PY" -m concierge.commands.train dataset --kind guided --domain retail --seed 0 \
  --tasks "$TRAIN_TASKS" --out "$WORK/guided_tau_v1_train.jsonl"
"$PY" -m concierge.commands.train dataset --kind guided --domain retail --seed 0 \
  --tasks "$EVAL_TASKS" --out "$WORK/guided_tau2_heldout.jsonl"

"$PY" -m concierge.commands.train run \
  --data "$WORK/guided_tau_v1_train.jsonl" --base embedded:smollm2 --out "$WORK/run" \
  --steps 300 --batch-size 2 --lr 3e-4 --warmup 15 --rank 16 --alpha 32 --seed 0 \
  --save-every 25 --threads "$THREADS" --dtype f16 \
  --eval-data "$WORK/guided_tau2_heldout.jsonl" --eval-base chat \
  --alias retail-inhouse --publish \
  --description "SmolLM2-135M-Instruct + LoRA: retail guided-mode commands (τ-bench v1 retail train tasks)" \
  "$@"
