#!/usr/bin/env python
"""Search a step-aware width schedule under a MACs budget (DEAP evolutionary search).

    python search/evolve.py --model runs/demo/model --budget 0.5
    python search/evolve.py --model runs/demo/model --budget 1.0 --mode nsga2 --output runs/demo/front/schedule.json
    accelerate launch --multi_gpu --num_processes 2 search/evolve.py --model ... --budget 0.5   # evaluation split

Writes schedule.json (the best schedule) and, beside it, pareto.json, pareto.png, schedule.png, log.csv and
checkpoint.json. Defaults come from the search/sampling sections of the run's config (the config.yaml next to the
model/ folder, or --config).
"""

import argparse
import sys
from pathlib import Path


def main(argv=None) -> int:
    from ddsm.cli import add_mixed_precision_argument, add_run_arguments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p.add_argument("--budget", type=float, help="MACs budget as a fraction of the full width's, in (0, 1] "
                   "(same scheduler and step count); default from the config's search.budget")
    p.add_argument("--budget-macs", type=float, help="absolute MACs budget per image instead of --budget")
    p.add_argument("--output", help="schedule JSON to write (default: <run>/search/schedule.json)")
    p.add_argument("--resume", action="store_true", help="continue from checkpoint.json beside --output")
    p.add_argument("--metric", help="quality metric: domain_fid, domain_kid, inception_fid, "
                   "fidelity (1 - SSIM to the full model, same seeds) or teacher_fid (classifier-feature FID to the "
                   "full model's samples of the same seeds)")
    p.add_argument("--mode", choices=["single", "nsga2"], help="single: best schedule under the budget; nsga2: "
                   "the quality-MACs Pareto front (default: the config's search.mode, single)")
    p.add_argument("--scheduler", help="diffusers scheduler class to search for (default: config sampling)")
    p.add_argument("--steps", type=int, help="sampling steps (default: config sampling.num_inference_steps)")
    p.add_argument("--allow-skip", action="store_true", help="let steps skip the network (reuse the last prediction)")
    p.add_argument("--segments", type=int, help="group consecutive steps into this many genes (long DDPM chains)")
    p.add_argument("--population", type=int, help="population size")
    p.add_argument("--generations", type=int, help="number of generations")
    p.add_argument("--num-samples", type=int, help="images per candidate evaluation (same seeds for all)")
    p.add_argument("--final-samples", type=int, help="images for re-evaluating the top candidates")
    p.add_argument("--top-k", type=int, help="candidates re-evaluated on --final-samples (with --halving-eta: "
                   "the candidates of the first rung)")
    p.add_argument("--halving-eta", type=int, help="successive halving for the final choice: the top k on "
                   "--num-samples, the best 1/ETA of them on N*ETA, ... the last on --final-samples (1: off, the top "
                   "k straight on --final-samples; default: the config's search.halving_eta)")
    p.add_argument("--crossover-prob", type=float, help="probability of crossover per pair of children")
    p.add_argument("--mutation-prob", type=float, help="probability of mutating a child")
    p.add_argument("--mutation-gene-prob", type=float, help="probability of mutating each gene of a mutated child")
    p.add_argument("--seed", type=int, help="seed of the evolution")
    p.add_argument("--sample-seed", type=int, default=0, help="search images use seeds SAMPLE_SEED..+N-1")
    p.add_argument("--no-baselines", action="store_true", help="skip scoring the uniform and fewer-steps baselines")
    p.add_argument("--autoencoder", help="AutoencoderKL directory for latent models (default: the config's)")
    add_mixed_precision_argument(p)
    args = p.parse_args(argv)

    from ddsm.cli import fail, load_autoencoder, open_run
    from ddsm.search import SearchError, SearchJob, run_search, segments_upto

    try:
        accelerator, model, cfg = open_run(args)
        s, smp = cfg.search, cfg.sampling
        pick = lambda flag, default: default if flag is None else flag  # noqa: E731
        num_steps = pick(args.steps, smp.num_inference_steps)
        # the config's segments is an upper bound (segments: 50 beside --steps 25: one gene per step); an explicit
        # --segments above the step count is an error
        segments = args.segments if args.segments is not None else segments_upto(s.segments, num_steps)
        job = SearchJob(
            output=args.output or str(Path(args.model).parent / "search" / "schedule.json"),
            budget=None if args.budget_macs is not None else pick(args.budget, s.budget),
            budget_macs=None if args.budget_macs is None else int(args.budget_macs),
            metric=pick(args.metric, s.metric), mode=pick(args.mode, s.mode),
            scheduler=pick(args.scheduler, smp.scheduler),
            num_steps=num_steps, allow_skip=args.allow_skip or s.allow_skip,
            segments=segments, population=pick(args.population, s.population),
            generations=pick(args.generations, s.generations), num_samples=pick(args.num_samples, s.num_samples),
            final_samples=pick(args.final_samples, s.final_samples), top_k=pick(args.top_k, s.top_k),
            halving_eta=pick(args.halving_eta, s.halving_eta),
            crossover_prob=pick(args.crossover_prob, s.crossover_prob),
            mutation_prob=pick(args.mutation_prob, s.mutation_prob),
            mutation_gene_prob=pick(args.mutation_gene_prob, s.mutation_gene_prob), seed=pick(args.seed, s.seed),
            sample_seed=args.sample_seed, dataset=cfg.data.name, data_root=cfg.data.root,
            guidance_scale=smp.guidance_scale, batch_size=smp.batch_size, baselines=not args.no_baselines,
            resume=args.resume)
        if Path(job.output).exists() and not args.resume and (Path(job.output).parent / "checkpoint.json").exists():
            print(f"note: {job.output} exists; starting a new search over it (use --resume to continue)",
                  file=sys.stderr)
        autoencoder = load_autoencoder(args.autoencoder or cfg.autoencoder, device=accelerator.device)
        summary = run_search(model, job, cfg.diffusion.scheduler_config(), accelerator=accelerator,
                             autoencoder=autoencoder)
    except (ValueError, OSError, SearchError) as e:
        return fail(e)
    if not accelerator.is_main_process:
        return 0
    best = summary["best"]
    print(f"best schedule: {best['macs_ratio']:.3f} of full MACs, {summary['metric_name']} = {best['quality']:.4f} "
          f"on {best['num_samples']} samples; {summary['evaluations']} evaluations, {summary['unet_forwards']:,} "
          f"UNet forwards ({summary['unet_forwards'] / summary['ddsm_search_forwards']:.1e} of the DDSM paper's "
          f"~{summary['ddsm_search_forwards']:.1e}), {summary['search_seconds'] / 60:.1f} min -> {job.output}")
    if len(summary["rungs"]) > 1:
        print("successive halving: " + ", ".join(f"{len(r['candidates'])} on {r['num_samples']}"
                                                 for r in summary["rungs"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
