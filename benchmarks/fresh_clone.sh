# Sourced by the benchmark scripts: clone the committed state of this repo into a temporary
# directory (removed on exit), cd into it and put this checkout's .venv first on PATH.
# Sets $repo (this checkout) and $work (the temporary directory, free for logs).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/fersynth"
cd "$work/fersynth"
export PATH="$repo/.venv/bin:$PATH"
# `dvc exp run` commits; a machine without a git identity must still run the benchmarks.
git config user.email bench@example.com
git config user.name bench
