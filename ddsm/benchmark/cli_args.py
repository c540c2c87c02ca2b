"""The :class:`~ddsm.benchmark.BenchmarkJob` that eval/benchmark.py and eval/frontier.py make from their shared flags
(:func:`ddsm.cli.add_benchmark_arguments`) and a run's config."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .job import BenchmarkJob

__all__ = ["benchmark_job"]


def benchmark_job(args, cfg, *, budgets: Sequence[float], num_steps: int, scheduler_name: str,
                  scheduler_config: Mapping[str, Any]) -> BenchmarkJob:
    """The :class:`BenchmarkJob` of the parsed flags of :func:`ddsm.cli.add_benchmark_arguments` and an experiment config
    ``cfg`` (its data set and guidance scale), at ``budgets`` and ``num_steps`` with the resolved sampler."""
    return BenchmarkJob(
        budgets=tuple(budgets), num_samples=args.num_samples, seed=args.seed, num_steps=num_steps,
        scheduler_name=scheduler_name, scheduler_config=scheduler_config, dataset=cfg.data.name,
        data_root=cfg.data.root, guidance_scale=cfg.sampling.guidance_scale, batch_size=args.batch_size,
        calibration_samples=args.calibration_samples, calibration_seed=args.calibration_seed,
        skip_max_consecutive=args.skip_max, ddsm_skip_delta=args.ddsm_skip_delta,
        stepsaver_threshold=args.stepsaver_threshold, stepsaver_reference_steps=args.stepsaver_reference_steps,
        stepsaver_candidates=tuple(args.stepsaver_candidates), stepsaver_samples=args.stepsaver_samples,
        stepsaver_fill_budget=args.stepsaver_fill_budget, domain=not args.no_domain,
        inception=not args.no_inception, inception_samples=args.inception_samples,
        inception_weights=args.inception_weights, inception_reference_samples=args.inception_reference_samples)
