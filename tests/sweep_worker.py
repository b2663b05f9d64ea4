"""A sweep worker process for tests/test_sweep.py: ``python sweep_worker.py STORAGE STUDY LOG``.

Runs the 3 x 2 grid of the tests with two seeds; every call of ``run_point`` appends
``start <key>`` and ``end <key>`` lines (with the process id) to LOG, and takes
``SWEEP_TEST_SECONDS`` seconds (default 0.5), long enough to be killed in the middle.
"""

from __future__ import annotations

import json
import os
import sys
import time

from cormult_lib.training.sweep import grid_points, run_sweep

AXES = {"shared_time": (2, 8, 32), "distance": ("cosine", "euclidean")}
SEEDS = (0, 1)


def main() -> None:
    storage, study, log = sys.argv[1:4]
    seconds = float(os.environ.get("SWEEP_TEST_SECONDS", "0.5"))

    def run_point(settings: dict, seed: int) -> dict[str, float]:
        key = json.dumps({"settings": settings, "seed": seed}, sort_keys=True)
        with open(log, "a") as file:
            file.write(f"start {os.getpid()} {key}\n")
        time.sleep(seconds)
        with open(log, "a") as file:
            file.write(f"end {os.getpid()} {key}\n")
        return {"auc": settings["shared_time"] / 64 + 0.01 * seed}

    run_sweep(grid_points(AXES), SEEDS, run_point, storage, study=study, progress=False,
              heartbeat_s=1)


if __name__ == "__main__":
    main()
