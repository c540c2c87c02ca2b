#!/usr/bin/env python
"""MACs per width of a slimmable UNet (one forward, one image), as JSON; optionally timed.

    python eval/flops.py --config configs/cifar10.yaml
    python eval/flops.py --model runs/demo/model --time --batch 64
    python eval/flops.py --dense ddpm-celebahq-256/unet                  # a dense diffusers UNet2DModel folder
    python eval/flops.py --dense ddpm-celebahq-256/unet/config.json      # or its config alone (random weights)
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="experiment YAML whose model section defines the UNet (random weights)")
    src.add_argument("--model", help="a SlimmableUNet save_pretrained directory")
    src.add_argument("--dense", metavar="DIR_OR_CONFIG", help="a dense diffusers UNet2DModel folder, or just its "
                     "config.json (MACs do not depend on the weights), converted with SlimmableUNet.from_dense")
    p.add_argument("--width-choices", type=float, nargs="+", metavar="W", help="with --dense: the widths to convert "
                   "at (default: those of 0.25 0.5 0.75 1.0 the layout's groups and heads allow)")
    p.add_argument("--channel-divisor", type=int, help="with --dense: round channel counts to multiples of this "
                   "(default 8)")
    p.add_argument("--time", action="store_true", help="also time a forward of a batch at each width, for the "
                   "supernet and the static sub-network of the same shape, and print the ratios")
    p.add_argument("--batch", type=int, default=16, help="batch size for --time (default 16)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per width for --time; the median is kept")
    p.add_argument("--no-cache", action="store_true", help="recount MACs instead of reading the cached table")
    p.add_argument("--output", help="also write the JSON to this file")
    args = p.parse_args(argv)
    if args.batch <= 0 or args.repeats <= 0:
        p.error(f"--batch and --repeats must be positive (got {args.batch}, {args.repeats})")
    if not args.dense and (args.width_choices or args.channel_divisor):
        p.error("--width-choices and --channel-divisor apply to --dense only")

    from ddsm.cli import fail, load_model_or_config
    from ddsm.models.macs import width_report
    from ddsm.utils import atomic_write_json

    try:
        if args.dense:
            from ddsm.models import SlimmableUNet, load_dense

            model = SlimmableUNet.from_dense(load_dense(args.dense), width_choices=args.width_choices,
                                             channel_divisor=args.channel_divisor or 8).eval()
        else:
            model = load_model_or_config(model_dir=args.model, config_path=args.config)
    except (ValueError, OSError) as e:
        return fail(e)
    report = width_report(model, time_batch=args.batch if args.time else None, repeats=args.repeats,
                          use_cache=not args.no_cache)
    report["parameters"] = sum(param.numel() for param in model.parameters())
    print(json.dumps(report, indent=2))
    if args.output:
        atomic_write_json(args.output, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
