#!/usr/bin/env python
"""Train the weight-shared slimmable UNet with the sandwich rule (DDSM), on one CPU or many GPUs.

    accelerate launch train/train_slimmable.py --config configs/mnist.yaml --output-dir runs/mnist
    accelerate launch train/train_slimmable.py --config configs/mnist.yaml --output-dir runs/mnist --resume
    accelerate launch --multi_gpu --num_processes 8 train/train_slimmable.py --config configs/cifar10.yaml
    python train/train_slimmable.py --config configs/mnist.yaml --max-steps 20 --dry-run

Writes OUTPUT_DIR/model/ (EMA weights, SlimmableUNet.from_pretrained), scheduler/, config.yaml (the resolved
config), log.jsonl (losses per width), samples/*.png (grids per width) and checkpoints/. Mixed precision and the
number of processes come from `accelerate launch` flags. Exit codes: 0 done, 1 training diverged (NaN/inf loss;
the last checkpoint is kept), 2 bad input.
"""

import argparse
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (model, data, diffusion and train sections)")
    p.add_argument("--output-dir", help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --output-dir (none: start at step 0)")
    p.add_argument("--max-steps", type=int, help="train this many optimiser steps in total (overrides "
                   "train.max_steps; with --resume, extends a finished run)")
    p.add_argument("--init-from", metavar="DENSE_DIR", help="start from a local diffusers UNet2DModel directory "
                   "or a dense SlimmableUNet model/ folder (e.g. trained with width_choices [1.0]), converted to a "
                   "supernet (the config's width_choices and channel_divisor are kept)")
    p.add_argument("--dry-run", action="store_true", help="validate the config, build everything, print a summary "
                   "and exit without training or writing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from ddsm.cli import fail
    from ddsm.config import load_config
    from ddsm.training import SlimmableTrainer, TrainingDiverged

    try:
        config = load_config(args.config)
        trainer = SlimmableTrainer(config, args.output_dir or f"runs/{config.name}", resume=args.resume,
                                   max_steps=args.max_steps, init_from=args.init_from,
                                   progress=not args.no_progress)
    except (ValueError, OSError) as e:
        return fail(e)
    try:
        if args.dry_run:
            trainer.accelerator.print(trainer.describe())
        else:
            trainer.train()
    except TrainingDiverged as e:
        return fail(e, code=1)
    finally:
        trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
