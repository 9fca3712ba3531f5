"""Peak memory of `fersynth fetch` on a zip bomb: about 1 MB on disk, one member of 1 GiB of zeros.

Builds a repo-like workspace in a temporary folder (params.yaml fetching data/raw/bomb.zip, an
imagefolder with one good image per class and split beside the bomb), runs `fersynth fetch` there in a
child process, and prints the child's exit code, its peak resident memory and the line naming the
problem. Run from the repo root:

    .venv/bin/python -m benchmarks.bench_zip_bomb [--mib 1024]

To measure another checkout's code (say, before a change), put it first on PYTHONPATH; the child
prints which fersynth it imported:

    git clone -q . /tmp/before && PYTHONPATH=/tmp/before/src:/tmp/before .venv/bin/python -m benchmarks.bench_zip_bomb
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.bad_inputs import bomb_workspace, run_measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024, help="inflated size of the bomb member (MiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        started = time.perf_counter()
        arguments = bomb_workspace(root, args.mib * 2**20)
        packed = (root / "data" / "raw" / "bomb.zip").stat().st_size
        print(
            f"built bomb.zip: {packed / 2**20:.1f} MiB packing {args.mib} MiB in {time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
        measured = run_measured(arguments, cwd=root)
    lines = measured.output.splitlines()
    print(next((line for line in lines if line.startswith("fersynth from")), "fersynth from: (not printed)"))
    seconds = time.perf_counter() - started
    print(f"exit code {measured.exit_code}, peak RSS {measured.peak_mib:.0f} MiB, {seconds:.1f} s")
    error = next((index for index, line in enumerate(lines) if line.startswith("error:")), len(lines))
    print(" ".join(line for line in lines[error:] if not line.startswith("VmHWM:")))  # rich wraps it at 80 columns


if __name__ == "__main__":
    main()
