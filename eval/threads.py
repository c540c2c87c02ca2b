#!/usr/bin/env python
"""Training speed alone and beside a busy process, per thread setting (a benchmark, not a test).

    python eval/threads.py                           # configs/mnist.yaml, 60 steps per run, every setting
    python eval/threads.py --steps 100 --settings default fixed2

Each run trains the config for --steps optimiser steps in a fresh subprocess (train/train_slimmable.py) and reads
its steps/s from log.jsonl; "busy" runs start one pure-Python busy loop beside it (one core held, as another job
would), stopped when the run ends. Settings: ``default`` is ddsm's own policy (threads adapt to the cores other
processes leave idle, ddsm.threads); ``fixed2`` / ``fixed1`` fix torch's threads (DDSM_THREADS; fixed2 is torch's
default on 2 cores, whose OpenMP workers spin against the other process); ``passive2`` fixes two threads that sleep
while they wait (OMP_WAIT_POLICY=PASSIVE). Compare rows of one run only.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = {"default": {}, "fixed2": {"DDSM_THREADS": "2"}, "fixed1": {"DDSM_THREADS": "1"},
            "passive2": {"DDSM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}}
BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def steps_per_second(config: str, steps: int, env: dict, busy: bool, timeout: float) -> float:
    """Median steps/s over the logged intervals of one training run (the first interval, warm-up, left out)."""
    with tempfile.TemporaryDirectory() as tmp:
        hog = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=timeout)]) if busy else None
        try:
            subprocess.run([sys.executable, "train/train_slimmable.py", "--config", config, "--output-dir", tmp,
                            "--max-steps", str(steps), "--no-progress"], env={**os.environ, **env}, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout)
        finally:
            if hog is not None:
                hog.kill()
        rates = [r["it_per_s"] for r in map(json.loads, (Path(tmp) / "log.jsonl").read_text().splitlines())
                 if "it_per_s" in r]
    rates = sorted(rates[1:] or rates)
    return rates[len(rates) // 2]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mnist.yaml", help="experiment YAML (default configs/mnist.yaml)")
    p.add_argument("--steps", type=int, default=60, help="optimiser steps per run (default 60)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help="thread settings to compare (default: all)")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a run is abandoned (default 600)")
    args = p.parse_args(argv)
    if args.steps < 20:
        p.error(f"--steps must be at least 20 (got {args.steps}): log.jsonl has one record per 10 steps")
    print(f"{'setting':>10} {'alone':>8} {'busy':>8} {'busy/alone':>10}   ({args.steps} steps of {args.config}, "
          f"{os.cpu_count()} cores; steps/s)")
    for name in args.settings:
        alone = steps_per_second(args.config, args.steps, SETTINGS[name], False, args.timeout)
        busy = steps_per_second(args.config, args.steps, SETTINGS[name], True, args.timeout)
        print(f"{name:>10} {alone:8.2f} {busy:8.2f} {busy / alone:10.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
