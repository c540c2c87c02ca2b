#!/usr/bin/env python
"""How good is each width of a supernet? Samples the same held-out seeds at every uniform width (and with fewer
full-width steps) and prints domain FID / KID to the real data, SSIM / PSNR to the full width and MACs.

    python eval/widths.py --model runs/demo/train/model
    python eval/widths.py --model runs/demo/train/model --num-samples 256 --fewer-steps 25 --json widths.json
    python eval/widths.py --model runs/demo/train/model --dense 0.5=runs/half_dense/model 0.25=runs/small_dense/model

Use it to compare training recipes (sandwich from scratch, a dense warm-up, --init-from, distillation) before
searching: a schedule can only be as good as the widths it mixes. ``--dense W=DIR`` adds a row per separately trained
dense model of width W's shape (e.g. trained for the same wall clock as the supernet): the weight-sharing promise
is that the supernet's width W matches or beats it. Exit codes: 0 done, 2 bad input.
"""

import argparse
import sys


def main(argv=None) -> int:
    from ddsm.cli import add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--num-samples", type=int, default=256, help="images per row (default 256)")
    p.add_argument("--seed", type=int, default=10_000, help="seeds SEED..SEED+N-1 (default 10000, held out)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the config's sampling.num_inference_steps)")
    p.add_argument("--fewer-steps", type=int, nargs="*", help="also full width with these step counts "
                   "(default: half the steps)")
    p.add_argument("--dense", nargs="+", default=[], metavar="W=DIR",
                   help="separately trained dense models (SlimmableUNet folders) of width W's shape, one row each")
    p.add_argument("--json", help="also write the rows to this JSON file (atomically)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)
    if args.num_samples < 2:
        p.error(f"--num-samples must be at least 2 (got {args.num_samples})")
    if args.steps is not None and args.steps < 2:
        p.error(f"--steps must be at least 2 (got {args.steps})")
    dense = []
    for item in args.dense:
        width, sep, path = item.partition("=")
        try:
            dense.append((float(width), path))
        except ValueError:
            sep = ""
        if not sep or not path:
            p.error(f"--dense {item!r}: expected WIDTH=DIR, e.g. 0.5=runs/half_dense/model")

    from tqdm.auto import tqdm

    from ddsm.cli import fail, load_model, open_run
    from ddsm.evaluation import FeatureSpace
    from ddsm.models import macs_table
    from ddsm.evaluation.metrics import fidelity_summary
    from ddsm.sampling import balanced_labels, build_scheduler, sample
    from ddsm.utils import atomic_write_json

    try:
        accelerator, model, cfg = open_run(args)
        steps = args.steps or cfg.sampling.num_inference_steps
        fewer = args.fewer_steps if args.fewer_steps is not None else [max(1, steps // 2)]
        if any(not 1 <= n < steps for n in fewer):
            raise ValueError(f"--fewer-steps {fewer}: expected step counts in 1..{steps - 1} (below --steps {steps})")
        dense_models = [(w, path, load_model(path, flag="--dense", device=accelerator.device)) for w, path in dense]
        for w, path, net in dense_models:
            if w not in model.width_choices:
                raise ValueError(f"--dense {w:g}={path}: {w:g} is not one of the supernet's widths "
                                 f"{sorted(model.width_choices)}")
            for key in ("sample_size", "in_channels", "num_classes"):
                if net.config[key] != model.config[key]:
                    raise ValueError(f"--dense {w:g}={path}: {key}={net.config[key]}, the supernet's is "
                                     f"{model.config[key]}; expected a model of the same data and conditioning")
        space = FeatureSpace.domain(cfg.data.name, model.config.sample_size, model.config.in_channels,
                                    progress=not args.no_progress, root=cfg.data.root, device=accelerator.device)
    except (ValueError, OSError) as e:
        return fail(e)

    table = macs_table(model)
    full_w = max(model.width_choices)
    seeds = range(args.seed, args.seed + args.num_samples)
    # (label, nominal width, steps, network, the width it runs at, MACs per forward)
    runs = [(f"width {w:g}", w, steps, model, w, table[w]) for w in sorted(model.width_choices, reverse=True)]
    runs += [(f"width {full_w:g}, {n} steps", full_w, n, model, full_w, table[full_w]) for n in fewer]
    for w, path, net in dense_models:  # a dense model runs at its own (only, full) width
        own = max(net.width_choices)
        runs.append((f"dense {w:g} shape (separate)", w, steps, net, own, macs_table(net)[own]))
    rows, full = [], None  # the first run is the full width: the others' fidelity reference
    for label, width, n, net, run_width, macs in tqdm(runs, desc="widths",
                                                      disable=args.no_progress or not accelerator.is_main_process):
        scheduler = build_scheduler(cfg.sampling.scheduler, cfg.diffusion.scheduler_config())
        images = sample(net, scheduler, run_width, seeds=seeds, num_inference_steps=n,
                        class_labels=balanced_labels(model, args.num_samples),
                        guidance_scale=cfg.sampling.guidance_scale, accelerator=accelerator, progress=False).images
        full = images if full is None else full
        fid, kid = space.fid_kid(images)
        fidelity = fidelity_summary(images, full)
        rows.append(dict(label=label, width=width, steps=n, macs_ratio=macs * n / (table[full_w] * steps),
                         domain_fid=fid, domain_kid=kid, ssim=fidelity["ssim"], psnr=fidelity["psnr"]))
    if not accelerator.is_main_process:
        return 0
    print(f"{args.num_samples} samples per row (seeds {seeds.start}..{seeds.stop - 1}), {cfg.sampling.scheduler}, "
          f"domain features {space.name}")
    print(f"| {'row':<28} | MACs ratio | domain FID | domain KID | SSIM to full | PSNR |")
    print(f"|{'-' * 30}|-----------:|-----------:|-----------:|-------------:|-----:|")
    for r in rows:
        print(f"| {r['label']:<28} | {r['macs_ratio']:10.3f} | {r['domain_fid']:10.2f} | {r['domain_kid']:10.4f} | "
              f"{r['ssim']:12.3f} | {r['psnr']:4.1f} |")
    if args.json:
        atomic_write_json(args.json, dict(model=args.model, num_samples=args.num_samples, seed=args.seed,
                                          steps=steps, features=space.name, rows=rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
