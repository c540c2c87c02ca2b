#!/usr/bin/env python
"""Train the small AutoencoderKL of a config's `vae` section, for latent diffusion.

    python train/train_autoencoder.py --config configs/mnist_latent.yaml --output-dir runs/mnist-latent-vae
    accelerate launch train/train_slimmable.py --config configs/mnist_latent.yaml   # then the UNet, in its latents

Writes OUTPUT_DIR/autoencoder/ (AutoencoderKL.save_pretrained, with the latent scaling_factor = 1/std of the
training latents in its config), config.yaml, log.jsonl, samples/recon-*.png and checkpoints/. Point the config's
`autoencoder:` key at OUTPUT_DIR/autoencoder (the default --output-dir is its parent). Exit codes: 0 done,
1 training diverged, 2 bad input.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML with a `vae` section (and data, model)")
    p.add_argument("--output-dir", help="run directory (default: the parent of the config's `autoencoder:` "
                   "directory when it ends in /autoencoder, else runs/<config name>-vae)")
    p.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    p.add_argument("--max-steps", type=int, help="overrides vae.max_steps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from ddsm.training import AutoencoderTrainer
    from ddsm.cli import fail
    from ddsm.config import load_config
    from ddsm.training import TrainingDiverged

    try:
        config = load_config(args.config)
        output_dir = args.output_dir
        if output_dir is None:
            target = Path(config.autoencoder) if config.autoencoder else None
            output_dir = target.parent if target is not None and target.name == "autoencoder" else \
                f"runs/{config.name}-vae"
        trainer = AutoencoderTrainer(config, output_dir, resume=args.resume, max_steps=args.max_steps,
                                     progress=not args.no_progress)
    except (ValueError, OSError) as e:
        return fail(e)
    try:
        trainer.train()
    except TrainingDiverged as e:
        return fail(e, code=1)
    finally:
        trainer.accelerator.end_training()
    return 0


if __name__ == "__main__":
    sys.exit(main())
