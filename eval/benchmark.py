#!/usr/bin/env python
"""Benchmark the searched step-aware schedule against other ways to save compute, at equal MACs budgets.

    python eval/benchmark.py --model runs/demo/model --schedule runs/demo/search/schedule.json \\
        --budgets 0.3 0.5 0.7 --num-samples 256 --output-dir runs/demo/benchmark
    python eval/benchmark.py --model runs/demo/model --schedules-dir runs/demo/searches \\
        --small-dense runs/small_dense/model --num-samples 1000 --inception-samples 1000

At each budget (a fraction of the full model's UNet MACs), every method samples the same held-out seeds in this
process: the full model (once), the widest uniform width that fits, fewer full-width steps (floor(budget x N)),
T-Stitch ramps (the supernet's smallest width first, and with --small-dense a separately trained small model
first), AdaptiveDiffusion skipping with delta bisected on calibration seeds to meet the budget, StepSaver per-class
step counts (fit on calibration seeds), the searched schedule (and, when given beside it, one searched without
skips: the "DDSM widths only" row), and the searched schedule with skipping added.
Each is measured by MACs actually spent, Inception FID (slow on a CPU: ~6 images/s, so --inception-samples),
domain FID, PSNR/SSIM to the full model (same seeds) and wall-clock speed-up over the full model.

Writes OUTPUT_DIR/benchmark.json, benchmark.md (a table per budget and where the searched schedule stands against
each method), benchmark.png (quality vs MACs) and stepsaver.json (the fitted StepSaver). Exit codes: 0 done, 2 bad
input.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ddsm.cli import add_benchmark_arguments, add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--schedule", help="the searched schedule JSON (search/evolve.py output); it stands for the "
                   "budget in its provenance (or the smallest --budgets value at or above its MACs ratio)")
    p.add_argument("--schedules-dir", help="a folder searched recursively for schedule JSON files, one per budget; "
                   "or two, one searched without skips (provenance search.allow_skip false: the 'DDSM widths only' "
                   "row) and one with them")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                   help="MACs budgets as fractions of the full model, each in (0, 1] (default 0.3 0.5 0.7)")
    p.add_argument("--steps", type=int, help="N, the full model's step count (default: the schedule's, else the "
                   "config's sampling.num_inference_steps)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the schedule's, else the config's)")
    add_benchmark_arguments(p)
    p.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="use schedules made for another model config, on purpose")
    p.add_argument("--output-dir", help="where the outputs go (default: benchmark/ beside the model folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)

    from ddsm.benchmark import benchmark_job, load_schedules, resolve_sampler, run_benchmark, write_benchmark
    from ddsm.cli import fail, load_autoencoder, load_model, open_run
    from ddsm.baselines import StepSaver

    try:
        accelerator, model, cfg = open_run(args)
        device = accelerator.device
        schedules = load_schedules(model, args.schedule, args.schedules_dir, args.allow_fingerprint_mismatch)
        name, scheduler_config, steps = resolve_sampler(args.model, cfg, schedules, args.scheduler, args.steps)
        job = benchmark_job(args, cfg, budgets=args.budgets, num_steps=steps, scheduler_name=name,
                            scheduler_config=scheduler_config)
        small = load_model(args.small_dense, flag="--small-dense", device=device) if args.small_dense else None
        stepsaver = StepSaver.load(args.stepsaver) if args.stepsaver else None
        autoencoder = load_autoencoder(cfg.autoencoder, device=device)
        out = Path(args.output_dir) if args.output_dir else Path(args.model).parent / "benchmark"
        if job.inception and not args.no_progress and device.type == "cpu":
            print(f"Inception FID on {job.inception_samples} images per method: about "
                  f"{job.inception_samples / 6:.0f} s per method on a 2-core CPU, plus the reference statistics "
                  "once (cached); N >= 1000 is the real target; --no-inception to skip", file=sys.stderr)
        report, artefacts = run_benchmark(model, job, schedules=schedules, small_dense=small, stepsaver=stepsaver,
                                          autoencoder=autoencoder, model_path=str(args.model),
                                          accelerator=accelerator, progress=not args.no_progress)
    except (ValueError, OSError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    paths = write_benchmark(report, out, artefacts)
    for block in report["budgets"]:
        print(f"budget {block['budget']:g}:")
        for r in block["methods"]:
            if r["status"] == "ok":
                print(f"  {r['name']:<40s} MACs {r['macs_ratio']:.3f} ({r['budget_status']}), "
                      f"SSIM {r['ssim']:.3f}, speed-up {r['speedup']:.2f}x")
            else:
                print(f"  {r['name']:<40s} {r['status']}: {r['note']}")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
