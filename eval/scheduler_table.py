#!/usr/bin/env python
"""MACs and wall clock per image of a schedule under several diffusers schedulers, side by side in one run.

    python eval/scheduler_table.py --model runs/demo/train/model --schedule runs/demo/search/schedule.json

For each scheduler, the same seeds are sampled at full width and with the schedule (remapped by nearest timestep
when the scheduler's timesteps differ from the schedule's). Prints a markdown table and writes JSON with --output.
"""

import argparse
import sys

DEFAULT = ["DDIMScheduler", "DDPMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="SlimmableUNet directory (the model/ folder of a training run)")
    p.add_argument("--schedule", required=True, help="schedule JSON (ddsm-schedule format)")
    p.add_argument("--schedulers", nargs="+", default=DEFAULT, help=f"diffusers schedulers (default: {DEFAULT})")
    p.add_argument("--num-samples", type=int, default=64, help="images per run (default 64)")
    p.add_argument("--seed", type=int, default=20000, help="images use seeds SEED..SEED+N-1")
    p.add_argument("--output", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    if args.num_samples <= 0:
        p.error(f"--num-samples must be positive (got {args.num_samples})")

    from ddsm.cli import default_labels, fail, load_model, load_scheduler
    from ddsm.sampling import build_scheduler, sample
    from ddsm.schedules import Schedule
    from ddsm.utils import atomic_write_json

    try:
        model = load_model(args.model)
        schedule = Schedule.load(args.schedule, model=model)
        config = dict(load_scheduler(args.model, None, schedule).config)
        schedulers = {name: build_scheduler(name, config) for name in args.schedulers}
    except (ValueError, OSError) as e:
        return fail(e)
    seeds = range(args.seed, args.seed + args.num_samples)
    labels = default_labels(model, args.num_samples)
    steps = len(schedule)
    sample(model, build_scheduler(args.schedulers[0], config), 1.0, seeds=seeds[:2],
           class_labels=labels[:2] if labels else None, num_inference_steps=2, progress=False)  # warm-up
    rows = []
    for name, scheduler in schedulers.items():
        scheduler.set_timesteps(steps)
        try:
            scheduler_plan = schedule if _same(schedule, scheduler) else schedule.remap(scheduler=scheduler)
        except ValueError as e:
            return fail(e)
        for plan_name, plan in (("full width", 1.0), ("schedule", scheduler_plan)):
            r = sample(model, build_scheduler(name, config), plan, seeds=seeds, class_labels=labels,
                       num_inference_steps=steps, progress=False)
            rows.append(dict(scheduler=name, plan=plan_name, macs_per_image=r.macs_per_image,
                             macs_ratio=r.macs_per_image / r.full_macs_per_image,
                             ms_per_image=1e3 * r.seconds_per_image))
    print("| scheduler | full width: MACs / ms per image | schedule: MACs (ratio) / ms per image |")
    print("|---|---:|---:|")
    for full, ours in zip(rows[::2], rows[1::2]):
        print(f"| {full['scheduler']} | {full['macs_per_image'] / 1e6:,.0f} M / {full['ms_per_image']:.1f} | "
              f"{ours['macs_per_image'] / 1e6:,.0f} M ({ours['macs_ratio']:.3f}) / {ours['ms_per_image']:.1f} |")
    if args.output:
        atomic_write_json(args.output, rows)
    return 0


def _same(schedule, scheduler) -> bool:
    try:
        schedule.check_scheduler(scheduler)
        return True
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
