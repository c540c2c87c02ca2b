#!/usr/bin/env python
"""Sample N images from a supernet with a step-aware schedule: PNG grid, .npz of images, MACs and time.

    python eval/sample.py --model runs/demo/model --schedule runs/demo/search/schedule.json --num-samples 64
    python eval/sample.py --model runs/demo/model --width 0.5 --scheduler DPMSolverMultistepScheduler --steps 20
"""

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ddsm.cli import add_mixed_precision_argument

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SlimmableUNet directory (the model/ folder of a training run)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--schedule", help="schedule JSON (ddsm-schedule format); default: full width every step")
    src.add_argument("--width", type=float, help="one width for every step instead of a schedule file")
    p.add_argument("--num-samples", type=int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=int, default=0, help="image i uses seed SEED+i (default 0)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the schedule's, else DDIMScheduler)")
    p.add_argument("--steps", type=int, help="sampling steps; a schedule is remapped to them by nearest timestep")
    p.add_argument("--class-label", type=int, help="class for every image (default: classes cycled)")
    p.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = off)")
    p.add_argument("--skip-delta", type=float, help="turn on AdaptiveDiffusion skipping with this delta")
    p.add_argument("--skip-max", type=int, default=4, help="AdaptiveDiffusion C_max: most consecutive skips")
    p.add_argument("--autoencoder", help="AutoencoderKL or VQModel directory for latent models")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (results do not depend on it)")
    p.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="use a schedule made for another model config, on purpose")
    p.add_argument("--output-dir", default="samples", help="where grid.png, samples.npz and sample.json go")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)
    if args.num_samples <= 0 or args.batch_size <= 0:
        p.error(f"--num-samples and --batch-size must be positive (got {args.num_samples}, {args.batch_size})")
    if args.steps is not None and args.steps <= 0:
        p.error(f"--steps must be positive (got {args.steps})")

    from ddsm.cli import default_labels, fail, load_autoencoder, load_model, load_scheduler
    from ddsm.runtime import make_accelerator, runtime_record
    from ddsm.images import save_grid
    from ddsm.sampling import SkipPolicy, sample
    from ddsm.schedules import Schedule
    from ddsm.utils import atomic_savez, atomic_write_json

    try:
        accelerator = make_accelerator(args.mixed_precision)
        model = load_model(args.model, device=accelerator.device)
        schedule = (Schedule.load(args.schedule, model=model,
                                  allow_fingerprint_mismatch=args.allow_fingerprint_mismatch)
                    if args.schedule else None)
        scheduler = load_scheduler(args.model, args.scheduler, schedule)
        if schedule is not None and (args.steps or args.scheduler):
            scheduler.set_timesteps(args.steps or len(schedule))
            schedule = schedule.remap(scheduler=scheduler)
        plan = schedule if schedule is not None else (args.width if args.width is not None else 1.0)
        labels = default_labels(model, args.num_samples, args.class_label)
        skip = SkipPolicy(delta=args.skip_delta, max_consecutive=args.skip_max) if args.skip_delta is not None else None
        result = sample(model, scheduler, plan, seeds=range(args.seed, args.seed + args.num_samples),
                        num_inference_steps=args.steps, class_labels=labels, guidance_scale=args.guidance_scale,
                        batch_size=args.batch_size, skip_policy=skip,
                        autoencoder=load_autoencoder(args.autoencoder, device=accelerator.device),
                        accelerator=accelerator)
    except (ValueError, OSError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    out = Path(args.output_dir)
    save_grid(result.images, out / "grid.png", scale=2 if model.config.sample_size < 64 else 1)
    atomic_savez(out / "samples.npz", images=result.images.numpy(), seeds=result.seeds,
                 labels=labels if labels is not None else [])
    summary = dict(result.summary(), scheduler=type(scheduler).__name__, widths=result.widths,
                   grid=str(out / "grid.png"), **runtime_record(model, accelerator))
    atomic_write_json(out / "sample.json", summary)
    print(json.dumps({k: v for k, v in summary.items() if k != "widths"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
