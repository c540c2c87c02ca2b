#!/usr/bin/env python
"""Cost of one sandwich-rule training step against one plain full-width step, measured side by side.

    python eval/train_cost.py --config configs/mnist.yaml
    python eval/train_cost.py --config configs/mnist.yaml --dense-config configs/mnist_half_dense.yaml

Both steps run forward + backward + optimiser on the same batch, alternating round by round in this process.
Prints JSON: forward MACs per sample of each step (fvcore table), their ratio, the median wall-clock of each step
and their ratio. With n sandwich widths the middle ones are drawn at random; the MACs ratio is the expected one.
``--dense-config`` also times a plain step of another (dense) model in the same rounds, e.g. to give it the same
wall clock as a supernet run: ``dense_steps_same_wall_clock`` = the supernet run's full-width + sandwich steps
(``train.full_width_steps`` and the rest of ``train.max_steps``) converted at the measured step times.
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (model and train sections)")
    p.add_argument("--batch", type=int, help="batch size (default: train.batch_size)")
    p.add_argument("--widths", type=int, help="sandwich widths per step (default: train.sandwich_widths)")
    p.add_argument("--rounds", type=int, default=10, help="timed rounds; medians are kept (default 10)")
    p.add_argument("--dense-config", help="also time a plain step of this model (same batch and data shape)")
    args = p.parse_args(argv)

    import statistics
    import time

    import torch

    from ddsm.cli import fail
    from ddsm.config import load_config
    from ddsm.models import macs_table
    from ddsm.training import sandwich_losses, sandwich_widths

    try:
        cfg = load_config(args.config)
        dense = load_config(args.dense_config).build_model().train() if args.dense_config else None
    except (ValueError, OSError) as e:
        return fail(e)
    n = args.widths or cfg.train.sandwich_widths
    batch = args.batch or cfg.train.batch_size
    if batch <= 0 or n <= 0 or args.rounds <= 0:
        return fail(ValueError(f"--batch, --widths and --rounds must be positive (got {batch}, {n}, {args.rounds})"))
    model = cfg.build_model().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    m = model.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, m.in_channels, m.sample_size, m.sample_size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    y = torch.randint(0, m.num_classes, (batch,), generator=g) if m.num_classes else None

    def step(widths):
        opt.zero_grad(set_to_none=True)
        sandwich_losses(model, widths, x, t, x, y, backward=lambda loss: loss.backward())
        opt.step()

    def timed(widths):
        start = time.perf_counter()
        step(widths)
        return time.perf_counter() - start

    full = (max(model.width_choices),)
    if dense is not None:
        d = dense.config
        if (d.in_channels, d.sample_size, bool(d.num_classes)) != (m.in_channels, m.sample_size, bool(m.num_classes)):
            return fail(ValueError(f"--dense-config {args.dense_config}: its data shape or conditioning differs from "
                                   f"--config's; expected the same in_channels, sample_size and class conditioning"))
        dense_opt = torch.optim.AdamW(dense.parameters(), lr=1e-4)

    def dense_step():
        start = time.perf_counter()
        dense_opt.zero_grad(set_to_none=True)
        sandwich_losses(dense, (max(dense.width_choices),), x, t, x, y, backward=lambda loss: loss.backward())
        dense_opt.step()
        return time.perf_counter() - start

    step(full), step(sandwich_widths(model.width_choices, n, g))  # warm-up
    if dense is not None:
        dense_step()
    plain, sandwich, dense_times = [], [], []
    for _ in range(args.rounds):
        plain.append(timed(full))
        sandwich.append(timed(sandwich_widths(model.width_choices, n, g)))
        if dense is not None:
            dense_times.append(dense_step())
    table = macs_table(model)
    widths = sorted(model.width_choices, reverse=True)
    middle = widths[1:-1]
    k = max(0, min(n, len(widths)) - 2)
    expected = table[widths[0]] + (table[widths[-1]] if n > 1 else 0) + (
        k * sum(table[w] for w in middle) / len(middle) if middle and k else 0)
    out = dict(config=args.config, batch=batch, sandwich_widths=n, threads=torch.get_num_threads(),
               plain_macs=table[widths[0]], sandwich_macs_expected=expected, macs_ratio=expected / table[widths[0]],
               plain_seconds=statistics.median(plain), sandwich_seconds=statistics.median(sandwich),
               rounds=args.rounds)
    out["time_ratio"] = out["sandwich_seconds"] / out["plain_seconds"]
    if dense is not None:
        tc = cfg.train
        run_seconds = (min(tc.full_width_steps, tc.max_steps) * out["plain_seconds"]
                       + max(tc.max_steps - tc.full_width_steps, 0) * out["sandwich_seconds"])
        out.update(dense_config=args.dense_config, dense_seconds=statistics.median(dense_times),
                   dense_macs=macs_table(dense)[max(dense.width_choices)])
        out["dense_steps_same_wall_clock"] = round(run_seconds / out["dense_seconds"])
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
