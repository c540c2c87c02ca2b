#!/usr/bin/env python
"""Check the toolkit on a CUDA GPU, unattended, in about five minutes (make gpu-check).

    python eval/gpu_check.py
    python eval/gpu_check.py --output-dir runs/gpu_check --time-limit 300

Trains a small MNIST supernet for a few steps, searches it, samples the same seeds on the GPU (fp32, bf16) and on
the CPU and compares the images, evaluates in fp32 and bf16, and times every width of the CIFAR-10 model on the GPU
beside its MACs ratio. Writes OUTPUT_DIR/gpu_check.json (stage logs in OUTPUT_DIR/logs/) and prints one summary
line. Without CUDA it prints "no CUDA: skipped" and exits 0. Exit codes: 0 passed or skipped, 1 a stage or a
comparison failed.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="runs/gpu_check", help="where the runs, logs and gpu_check.json go")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds for the whole check (default 300)")
    args = p.parse_args(argv)
    if args.time_limit <= 0:
        p.error(f"--time-limit must be positive (got {args.time_limit})")

    from ddsm.gpu_check import GpuCheckSettings, run_gpu_check, summary_line

    result = run_gpu_check(GpuCheckSettings(repo=str(Path(__file__).resolve().parents[1]),
                                            output_dir=args.output_dir, time_limit=args.time_limit))
    print(summary_line(result))
    return 1 if result["status"] == "fail" else 0


if __name__ == "__main__":
    sys.exit(main())
