#!/usr/bin/env bash
# Real-only vs real+GAN(calibrated), in one `dvc exp show` table, in a fresh clone of this repo:
#   real-gan                 params.yaml as committed (merge.sources: real, offline, gan)
#   real-gan-threshold-0.3   the same with a looser calibration filter
#   real-only                no synthetic images (the GAN trains 0 epochs, generate plans nothing)
# Extra -S arguments apply to all three, e.g. for FER2013:
#   benchmarks/compare_synthetic.sh -S fetch.source=fer2013 -S fetch.path=$PWD/../shared/data/fer2013.zip
# Runs with this checkout's .venv (make setup first). Prints each experiment's wall time, then the table.
set -euo pipefail
# shellcheck source=benchmarks/fresh_clone.sh
source "$(dirname "$0")/fresh_clone.sh"
overrides=("$@")

experiment() {
    local name=$1 start=$SECONDS
    shift
    # Every experiment starts from the committed params: `dvc exp run` leaves the last one's in the workspace.
    git checkout -q -- params.yaml
    dvc exp run -n "$name" ${overrides[@]+"${overrides[@]}"} "$@" >"$work/$name.log" 2>&1 || { cat "$work/$name.log"; exit 1; }
    echo "$name: $((SECONDS - start)) s; stages run: $(grep -o "Running stage '[a-z-]*'" "$work/$name.log" | cut -d"'" -f2 | tr '\n' ' ')"
}

echo "nproc=$(nproc); clone at $(git rev-parse --short HEAD); overrides: ${*:-none}"
experiment real-gan
experiment real-gan-threshold-0.3 -S calibrate.threshold=0.3
experiment real-only -S train_gan.epochs=0 -S generate.target=per_class -S generate.per_class=0 \
    -S 'merge.sources=[real,offline]'
dvc exp show --no-pager --md --drop '.*' --keep \
    '^(Experiment|merge.sources|calibrate.threshold|expression_accuracy|synthetic_share|accuracy|macro_f1|balanced_accuracy|recall_disgust)$'
