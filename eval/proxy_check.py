#!/usr/bin/env python
"""Check that the search's score is a trustworthy proxy: rank correlation with held-out Inception FID.

    python eval/proxy_check.py --model runs/demo/model
    python eval/proxy_check.py --model runs/demo/model --metrics fidelity teacher_fid domain_fid \\
        --search-samples 64 256 --inception-samples 1000 --num-schedules 24 --output runs/demo/proxy/proxy.json

Builds --num-schedules diverse schedules for the model's step count (uniform widths, fewer full-width steps, ramps
narrow->full and full->narrow, random width mixes with and without skips at MACs ratios spread over
--min-ratio..--max-ratio; deterministic from --seed). For each it computes every --metrics score exactly as
search/evolve.py does (same evaluator, search seeds --search-seed.., at each --search-samples N) and the held-out
score (--heldout-metric, default Inception FID, on --inception-samples images of seeds --heldout-seed..), then
prints a table, Spearman's rank correlation of each search score with the held-out score (trusted at rho >= 0.8 over
>= 20 schedules) and the cost of each (UNet forwards and seconds per schedule).

Inception on a CPU runs about 6 images/s, so N = 1000 takes a few minutes per schedule: the output JSON is rewritten
atomically after every schedule and a rerun with the same settings continues where it stopped (and computes only
what is missing, e.g. another metric or N). Writes OUTPUT (JSON), OUTPUT.md (table) and OUTPUT.png (scatter per
score). Exit codes: 0 done, 2 bad input.
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ddsm.cli import add_inception_reference_arguments, add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--output", help="JSON to write (default: <run>/proxy_check/proxy_check.json); the table (.md) "
                   "and plot (.png) go beside it")
    p.add_argument("--metrics", nargs="+", default=["fidelity", "teacher_fid", "domain_fid"],
                   help="search metrics to check (default: fidelity teacher_fid domain_fid); any of domain_fid, "
                   "domain_kid, inception_fid, fidelity, teacher_fid")
    p.add_argument("--search-samples", type=int, nargs="+", help="N of the search scores, one column per N and "
                   "metric (default: the config's search.num_samples); e.g. 64 256 shows how rho grows with N")
    p.add_argument("--search-seed", type=int, default=0, help="search images use seeds SEARCH_SEED..+N-1, as "
                   "search/evolve.py's --sample-seed (default 0)")
    p.add_argument("--heldout-metric", default="inception_fid",
                   help="the held-out score (default inception_fid; domain_fid is a fast stand-in for tests)")
    p.add_argument("--heldout-samples", "--inception-samples", dest="heldout_samples", type=int, default=1000,
                   help="images per schedule for the held-out score (default 1000; --inception-samples is the "
                   "same flag)")
    p.add_argument("--heldout-seed", type=int, default=10_000,
                   help="held-out images use seeds HELDOUT_SEED..+M-1 (default 10000, as eval/evaluate.py)")
    p.add_argument("--num-schedules", type=int, default=24, help="schedules to score (default 24; >= 20 for a "
                   "trust claim)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random schedules (default 0)")
    p.add_argument("--min-ratio", type=float, default=0.2, help="lowest MACs ratio of the ramps, fewer-steps and "
                   "random schedules (default 0.2)")
    p.add_argument("--max-ratio", type=float, default=0.9, help="highest MACs ratio (default 0.9)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the config's sampling.scheduler)")
    p.add_argument("--steps", type=int, help="sampling steps (default: the config's sampling.num_inference_steps)")
    p.add_argument("--batch-size", type=int, help="images per forward (default: the config's sampling.batch_size)")
    add_inception_reference_arguments(p)
    p.add_argument("--autoencoder", help="AutoencoderKL directory for latent models (default: the config's)")
    p.add_argument("--no-plot", action="store_true", help="do not write the scatter plot")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)

    from ddsm.cli import fail, load_autoencoder, open_run
    from ddsm.search import ProxyCheckJob, SearchError, plot_proxy_check, proxy_markdown, run_proxy_check
    from ddsm.utils import atomic_write

    try:
        accelerator, model, cfg = open_run(args)
        smp = cfg.sampling
        output = args.output or str(Path(args.model).parent / "proxy_check" / "proxy_check.json")
        job = ProxyCheckJob(
            output=output, metrics=tuple(args.metrics),
            search_samples=tuple(args.search_samples or [cfg.search.num_samples]), search_seed=args.search_seed,
            heldout_metric=args.heldout_metric, heldout_samples=args.heldout_samples, heldout_seed=args.heldout_seed,
            num_schedules=args.num_schedules, seed=args.seed, min_ratio=args.min_ratio, max_ratio=args.max_ratio,
            scheduler=args.scheduler or smp.scheduler, num_steps=args.steps or smp.num_inference_steps,
            dataset=cfg.data.name, data_root=cfg.data.root, guidance_scale=smp.guidance_scale,
            batch_size=args.batch_size or smp.batch_size, inception_weights=args.inception_weights,
            inception_reference_samples=args.inception_reference_samples)
        if (job.heldout_metric == "inception_fid" and accelerator.device.type == "cpu"
                and not args.no_progress and accelerator.is_main_process):
            print(f"Inception FID on {job.heldout_samples} images per schedule: about {job.heldout_samples / 6:.0f} s "
                  f"per schedule on a 2-core CPU, {job.num_schedules} schedules; resumable (rerun the same command)",
                  file=sys.stderr)
        autoencoder = load_autoencoder(args.autoencoder or cfg.autoencoder, device=accelerator.device)
        report = run_proxy_check(model, job, cfg.diffusion.scheduler_config(), accelerator=accelerator,
                                 autoencoder=autoencoder, progress=not args.no_progress)
    except (ValueError, OSError, SearchError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    out = Path(job.output)
    text = proxy_markdown(report)
    atomic_write(out.with_suffix(".md"), text)
    written = [str(out), str(out.with_suffix(".md"))]
    if not args.no_plot:
        written.append(str(plot_proxy_check(report, out.with_suffix(".png"))))
    print(text)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
