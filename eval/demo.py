#!/usr/bin/env python
"""The whole pipeline on the embedded MNIST digits (make demo): train, search at budget 0.5, evaluate, frontier,
report.

    python eval/demo.py                      # runs/demo/report.md; finished stages are reused
    python eval/demo.py --force              # redo every stage
"""

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/mnist.yaml", help="experiment YAML (default configs/mnist.yaml)")
    p.add_argument("--output-dir", default="runs/demo", help="where everything goes (default runs/demo)")
    p.add_argument("--max-steps", type=int, help="training steps (default: the config's train.max_steps)")
    p.add_argument("--eval-samples", type=int, default=250, help="images per run in the final evaluation")
    p.add_argument("--inception-reference", type=int, default=500,
                   help="real images for the Inception reference statistics (cached)")
    p.add_argument("--inception", action=argparse.BooleanOptionalAction, default=False,
                   help="also Inception FID in the final evaluation (off by default: on 2 CPU cores it costs about "
                        "1.5 of the demo's 15 minutes, and at N = 250 it is mostly bias; the frontier and the "
                        "evaluation report domain FID)")
    p.add_argument("--no-frontier", action="store_true", help="skip the frontier stage (every peer method over "
                   "step counts x budgets at a small N)")
    p.add_argument("--frontier-steps", type=int, nargs="+", default=[25],
                   help="its step counts (default 25: where choosing widths at a fixed step count is tested hardest; "
                        "each more step count adds minutes)")
    p.add_argument("--frontier-budgets", type=float, nargs="+", default=[0.35, 0.5, 0.7],
                   help="its MACs budgets, each in (0, 1] (default 0.35 0.5 0.7)")
    p.add_argument("--frontier-samples", type=int, default=100, help="its held-out images per point (default 100)")
    p.add_argument("--force", action="store_true", help="redo every stage even if its outputs exist")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.eval_samples < 2:
        p.error(f"--eval-samples must be at least 2 (got {args.eval_samples})")
    if args.frontier_samples < 2:
        p.error(f"--frontier-samples must be at least 2 (got {args.frontier_samples})")
    if any(not 0 < b <= 1 for b in args.frontier_budgets):
        p.error(f"--frontier-budgets {args.frontier_budgets}: expected fractions in (0, 1]")
    if any(n < 2 for n in args.frontier_steps):
        p.error(f"--frontier-steps {args.frontier_steps}: expected step counts of at least 2")

    from ddsm.cli import fail
    from ddsm.demo import DemoSettings, run_demo

    try:
        run_demo(DemoSettings(config=args.config, output_dir=args.output_dir, max_steps=args.max_steps,
                              eval_samples=args.eval_samples, inception_reference=args.inception_reference,
                              inception=args.inception, frontier=not args.no_frontier,
                              frontier_steps=tuple(args.frontier_steps), frontier_budgets=tuple(args.frontier_budgets),
                              frontier_samples=args.frontier_samples, force=args.force,
                              progress=not args.no_progress))
    except (ValueError, OSError) as e:
        return fail(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
