#!/usr/bin/env bash
# Times the demo pipeline in a fresh clone of this repo (committed state, params.yaml as committed):
#   1. a full `dvc repro` (all nine stages),
#   2. a no-op `dvc repro` (goal: at most 2 s),
#   3. `dvc exp run -S train.lr=...` and the stages it reran (goal: train and evaluate only).
# Usage: benchmarks/bench_pipeline.sh [extra `dvc exp run` -S arguments for step 3]
# Runs with this checkout's .venv (make setup first); the clone's code is the same as HEAD's.
set -euo pipefail
# shellcheck source=benchmarks/fresh_clone.sh
source "$(dirname "$0")/fresh_clone.sh"

seconds() { local start=$SECONDS; "$@" >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }; echo $((SECONDS - start)); }
precise() { /usr/bin/env python3 -c 'import subprocess,sys,time; t=time.perf_counter(); r=subprocess.run(sys.argv[1:],capture_output=True); print(f"{time.perf_counter()-t:.2f}"); sys.exit(r.returncode)' "$@"; }

echo "nproc=$(nproc) torch threads default; clone at $(git rev-parse --short HEAD)"
# Each output line is stamped with the seconds since the start, so every stage's share shows.
stamped() { local start=$SECONDS; "$@" 2>&1 | while IFS= read -r line; do echo "$((SECONDS - start)) $line"; done; }
start=$SECONDS
stamped dvc repro >"$work/full.log" || { cat "$work/full.log"; exit 1; }
echo "full dvc repro:        $((SECONDS - start)) s"
echo "stage start times (s): $(grep -o "^[0-9]* Running stage '[a-z-]*'" "$work/full.log" | sed "s/ Running stage '\([a-z-]*\)'/ \1/" | tr '\n' ',' )"
echo "no-op dvc repro:       $(precise dvc repro) s"
git add -A >/dev/null && git commit -qm "bench baseline" >/dev/null
echo "dvc exp run -S train.lr=3.0e-3 ${*:-}: $(seconds dvc exp run -S train.lr=3.0e-3 "$@") s"
echo "stages rerun: $(grep -o "Running stage '[a-z-]*'" "$work/log" | tr '\n' ' ')"
