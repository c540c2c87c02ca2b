#!/usr/bin/env python
"""The benchmark frontier: every method at every MACs budget and DDIM step count, FID against MACs.

    python eval/frontier.py --model runs/demo/train/model --output-dir runs/demo/frontier
    python eval/frontier.py --model runs/demo/train/model --steps 10 25 50 --budgets 0.25 0.35 0.5 0.7 \\
        --num-samples 1000 --inception-samples 1000 --small-dense runs/small_dense/model
    python eval/frontier.py --model ... --schedules-dir runs/demo/searches --no-search   # only given schedules

For each step count (--steps) and budget (--budgets), two DDSM schedules: one searched without skip genes (DDSM
widths only) and one with them (DDSM widths + skips). Each comes from --schedules-dir (a ddsm-schedule file with
that many steps whose provenance names the search budget and search.allow_skip), else from an earlier run in the
same --output-dir, else from a search run here with the config's search section (flags below override it); each
search is saved as OUTPUT/searches/steps{S}/budget{b}/{widths,skips}/schedule.json, so a rerun reuses it and an
interrupted search resumes. Then eval/benchmark.py's benchmark runs once per step count with them (uniform width,
fewer steps, T-Stitch with the supernet and with --small-dense, AdaptiveDiffusion, StepSaver, both DDSM schedules,
DDSM + AdaptiveDiffusion), on the same held-out seeds, and is saved as OUTPUT/steps{S}/benchmark.json (.md, .png)
when it ends; a rerun skips finished step counts unless --force.

Writes OUTPUT/frontier.json, OUTPUT/frontier.md (per step count a table: rows methods, columns budgets, cells
"FID (MACs ratio)", with the full model's FID at that step count and at --reference-steps) and one plot per step
count, OUTPUT/frontier_steps{S}.png (FID against MACs, a line per method). FID is Inception FID when computed,
else domain FID. Exit codes: 0 done, 2 bad input.
"""

import argparse
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    from ddsm.cli import add_benchmark_arguments, add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--output-dir", help="where the outputs go (default: frontier/ beside the model folder)")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50],
                   help="step counts, each an int >= 2 (default 10 25 50)")
    p.add_argument("--budgets", type=float, nargs="+", default=[0.25, 0.35, 0.5, 0.7],
                   help="MACs budgets as fractions of the full model at the same step count, each in (0, 1] "
                   "(default 0.25 0.35 0.5 0.7)")
    p.add_argument("--reference-steps", type=int, default=50,
                   help="step count of the full model every table and plot also shows (default 50)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default: the config's sampling.scheduler)")
    p.add_argument("--force", action="store_true", help="run finished step counts' benchmarks again (searches "
                   "are always reused: delete a search's folder to search again)")
    g = p.add_argument_group("the DDSM schedules")
    g.add_argument("--schedules-dir", help="a folder searched recursively for ddsm-schedule JSON files; each "
                   "stands for its step count, provenance search.budget and kind (search.allow_skip)")
    g.add_argument("--no-search", action="store_true", help="never search: every schedule must be in "
                   "--schedules-dir or in OUTPUT/searches from an earlier run")
    g.add_argument("--metric", help="search quality metric (default: the config's search.metric)")
    g.add_argument("--population", type=int, help="search population (default: the config's)")
    g.add_argument("--generations", type=int, help="search generations (default: the config's)")
    g.add_argument("--search-samples", type=int, help="images per candidate in the search (default: the "
                   "config's search.num_samples)")
    g.add_argument("--final-samples", type=int, help="images for re-evaluating the top candidates (default: the "
                   "config's)")
    g.add_argument("--top-k", type=int, help="candidates re-evaluated on --final-samples (default: the config's)")
    g.add_argument("--halving-eta", type=int, help="successive halving of the top k, --search-samples -> "
                   "--final-samples (1: off; default: the config's search.halving_eta)")
    g.add_argument("--segments", type=int, help="group consecutive steps into this many genes (at most the "
                   "smallest --steps; default: the config's search.segments, capped at each step count)")
    g.add_argument("--search-seed", type=int, help="seed of the evolution (default: the config's search.seed)")
    g.add_argument("--sample-seed", type=int, default=0, help="search images use seeds SAMPLE_SEED.. (default 0; "
                   "must not overlap the evaluation seeds)")
    g.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="use schedules made for another model config, on purpose")
    b = p.add_argument_group("the benchmark (as eval/benchmark.py)")
    add_benchmark_arguments(b, frontier=True)
    b.add_argument("--no-progress", action="store_true", help="no progress bars (the stage lines stay)")
    add_mixed_precision_argument(b)
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)

    from ddsm.benchmark import FrontierJob, benchmark_job, check_steps, load_schedules, resolve_sampler, run_frontier
    from ddsm.cli import fail, load_autoencoder, load_model, open_run
    from ddsm.search import SearchJob

    try:
        check_steps(args.steps)
        check_steps([args.reference_steps], "--reference-steps")
        accelerator, model, cfg = open_run(args)
        device = accelerator.device
        schedules = (load_schedules(model, None, args.schedules_dir, args.allow_fingerprint_mismatch)
                     if args.schedules_dir else [])
        name, scheduler_config, _ = resolve_sampler(args.model, cfg, (), args.scheduler, min(args.steps))
        bench = benchmark_job(args, cfg, budgets=args.budgets, num_steps=min(args.steps), scheduler_name=name,
                              scheduler_config=scheduler_config)
        search = None
        if not args.no_search:
            s = cfg.search
            pick = lambda flag, default: default if flag is None else flag  # noqa: E731
            search = SearchJob(
                output="schedule.json", budget=max(args.budgets), metric=pick(args.metric, s.metric),
                mode="single", scheduler=name, num_steps=min(args.steps), segments=pick(args.segments, s.segments),
                population=pick(args.population, s.population), generations=pick(args.generations, s.generations),
                num_samples=pick(args.search_samples, s.num_samples),
                final_samples=pick(args.final_samples, s.final_samples), top_k=pick(args.top_k, s.top_k),
                halving_eta=pick(args.halving_eta, s.halving_eta), crossover_prob=s.crossover_prob,
                mutation_prob=s.mutation_prob,
                mutation_gene_prob=s.mutation_gene_prob, seed=pick(args.search_seed, s.seed),
                sample_seed=args.sample_seed, dataset=cfg.data.name, data_root=cfg.data.root,
                guidance_scale=cfg.sampling.guidance_scale, batch_size=args.batch_size, baselines=False)
            if args.segments is not None and args.segments > min(args.steps):  # the config's value is capped
                raise ValueError(f"--segments {search.segments} is above the smallest --steps {min(args.steps)}: "
                                 "expected at most that many genes")
        job = FrontierJob(benchmark=bench, search=search, steps=tuple(args.steps),
                          reference_steps=args.reference_steps, force=args.force)
        small = load_model(args.small_dense, flag="--small-dense", device=device) if args.small_dense else None
        autoencoder = load_autoencoder(cfg.autoencoder, device=device)
        out = Path(args.output_dir) if args.output_dir else Path(args.model).parent / "frontier"
        if bench.inception and device.type == "cpu":
            print(f"Inception FID on {bench.inception_samples} images per method and step count: about "
                  f"{bench.inception_samples / 6:.0f} s each on a 2-core CPU; --no-inception to skip",
                  file=sys.stderr)

        def log(line: str) -> None:
            if accelerator.is_main_process:
                print(line, file=sys.stderr, flush=True)

        frontier = run_frontier(model, job, out, scheduler_config=scheduler_config, schedules=schedules,
                                small_dense=small, autoencoder=autoencoder, model_path=str(args.model),
                                accelerator=accelerator, progress=not args.no_progress, log=log,
                                allow_fingerprint_mismatch=args.allow_fingerprint_mismatch)
    except (ValueError, OSError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    q = frontier["quality"]
    print(f"{q['name']} (N = {q['num_samples']}, {q['features']}), cells FID (MACs ratio):")
    for block in frontier["step_counts"]:
        print(f"{block['steps']} steps:")
        for m in block["methods"]:
            cells = ["   n/a        " if p["status"] != "ok" or p["fid"] is None else
                     f"{p['fid']:7.2f} ({p['macs_ratio']:.2f})" for p in m["points"]]
            print(f"  {m['name']:<36s} " + "  ".join(cells))
    print(f"wrote {out / 'frontier.json'}, {out / 'frontier.md'} and one frontier_steps*.png per step count")
    return 0


if __name__ == "__main__":
    sys.exit(main())
