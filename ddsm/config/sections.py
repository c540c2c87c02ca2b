"""The sections of an experiment config, one frozen dataclass each. Every field's annotation and rule (type, bounds,
closed set of values) is checked when a section is made, from YAML or in code (see :mod:`.check`)."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional, Tuple

from .check import Section, setting

__all__ = ["DataConfig", "DiffusionConfig", "TrainConfig", "SamplingConfig", "SearchConfig", "AutoencoderConfig",
           "BETA_SCHEDULES", "PREDICTION_TYPES", "SEARCH_MODES"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")  # the ones every scheduler of ddsm.sampling takes
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
SEARCH_MODES = ("single", "nsga2")  # best schedule under the budget | the quality-MACs Pareto front


def _datasets() -> Tuple[str, ...]:
    from ..data import DATASETS

    return DATASETS


def _splits() -> Tuple[str, ...]:
    from ..data import SPLITS

    return SPLITS


def _schedulers() -> Tuple[str, ...]:
    from ..sampling import SCHEDULERS

    return SCHEDULERS


def _metrics() -> Tuple[str, ...]:
    from ..evaluation import METRICS

    return METRICS


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    SECTION = "data"
    name: str = setting("mnist-5k", choices=_datasets)          # a name from ddsm.data.DATASETS
    split: str = setting("train", choices=_splits)              # which split to train on
    image_size: Optional[int] = setting(None, gt=0)  # resize to this (default: the model's sample_size)
    channels: Optional[int] = setting(None, choices=(1, 3))  # default: the model's in_channels
    root: Optional[str] = None        # folder for cifar10 / imagefolder / a non-default fashion-mnist
    download: bool = False            # cifar10 only, and only when you ask


@dataclasses.dataclass(frozen=True)
class DiffusionConfig(Section):
    SECTION = "diffusion"
    num_train_timesteps: int = setting(1000, gt=1)
    beta_schedule: str = setting("linear", choices=BETA_SCHEDULES)  # diffusers name
    beta_start: float = setting(0.0001, gt=0, lt=1)
    beta_end: float = setting(0.02, gt=0, lt=1)
    prediction_type: str = setting("epsilon", choices=PREDICTION_TYPES)  # what the UNet predicts

    def check(self) -> None:
        if self.beta_start >= self.beta_end:
            raise self.fail(f"beta_start={self.beta_start} >= beta_end={self.beta_end}: expected beta_start < beta_end")

    def scheduler_config(self) -> Dict[str, Any]:
        """Keyword arguments shared by every diffusers scheduler built for this model."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    SECTION = "train"
    batch_size: int = setting(64, gt=0)               # per process
    learning_rate: float = setting(1e-3, gt=0)
    weight_decay: float = setting(0.0, ge=0)
    warmup_steps: int = setting(200, ge=0)
    max_steps: int = setting(2500, gt=0)
    grad_clip: float = setting(1.0, ge=0)             # 0: no clipping
    gradient_accumulation_steps: int = setting(1, gt=0)
    ema_decay: float = setting(0.995, ge=0, lt=1)
    sandwich_widths: int = setting(4, gt=0)          # widths per step: largest + smallest + (n-2) random others
    full_width_steps: int = setting(0, ge=0)  # the first steps train the largest width alone (a dense warm-up)
    reorder_channels: bool = False    # once, at step full_width_steps (the sandwich's start): sort channels, heads
    #   and shared streams by importance (free at width 1.0; ddsm.models.reorder). Never after --init-from of a
    #   supernet trained at several widths (its narrow widths are trained already)
    distill_weight: float = setting(0.0, ge=0)  # in-place distillation: weight of the MSE to the full width's output
    distill_only: bool = False        # small widths learn only from the full width (no ground-truth loss)
    teacher_weight: float = setting(0.0, ge=0)  # every width also regresses a frozen dense teacher (--init-from's
    #   model, else the warm-up's average at the end of full_width_steps); 0: off
    timestep_bias: float = setting(0.0, ge=-1, le=1)  # tilt the narrow widths' loss toward high-noise (> 0) or
    #   low-noise (< 0) timesteps (smallest width: weight 1 - b at t = 0 to 1 + b at t = T - 1; largest uniform)
    label_dropout: float = setting(0.1, ge=0, lt=1)  # class-conditional models: share of labels made the null class
    seed: int = 0
    checkpoint_every: int = setting(500, gt=0)
    sample_every: int = setting(500, gt=0)            # sample grids per width (PNG) at these steps
    sample_images: int = setting(64, ge=0)   # images per width in those grids (0: no grids); seeds 0..n-1, every time
    sample_steps: int = setting(50, gt=0)             # DDIM steps for the grids
    log_every: int = setting(10, gt=0)
    num_workers: int = setting(0, ge=0)
    keep_checkpoints: int = setting(2, gt=0)

    def check(self) -> None:
        if self.distill_only and self.distill_weight <= 0:
            raise self.fail(f"distill_only=True with distill_weight={self.distill_weight}: the small widths would "
                            "learn nothing; set distill_weight > 0")


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig(Section):
    """Section ``vae``: the small diffusers ``AutoencoderKL`` that train/train_autoencoder.py trains for latent
    diffusion, and its recipe. Its input size and channels come from the data (see ``ddsm.training.autoencoder``)."""

    SECTION = "vae"
    block_out_channels: Tuple[int, ...] = setting((32, 64), gt=0)  # one level each; all but the last halve the size
    latent_channels: int = setting(4, gt=0)
    layers_per_block: int = setting(1, gt=0)
    norm_num_groups: int = setting(8, gt=0)
    mid_block_attention: bool = True
    kl_weight: float = setting(1e-6, ge=0)  # weight of the KL term against the per-pixel MSE reconstruction loss
    batch_size: int = setting(64, gt=0)               # per process
    learning_rate: float = setting(1e-3, gt=0)
    warmup_steps: int = setting(100, ge=0)
    max_steps: int = setting(2000, gt=0)
    grad_clip: float = setting(1.0, ge=0)
    seed: int = 0
    checkpoint_every: int = setting(500, gt=0)
    log_every: int = setting(10, gt=0)
    keep_checkpoints: int = setting(2, gt=0)
    scale_images: int = setting(0, ge=0)  # images encoded to measure the latent std (0: the whole training split)

    def check(self) -> None:
        chans = list(self.block_out_channels)
        if not chans:
            raise self.fail("block_out_channels=[]: expected a non-empty list of positive ints")
        if any(c % self.norm_num_groups for c in chans):
            raise self.fail(f"norm_num_groups={self.norm_num_groups}: expected a divisor of every "
                            f"block_out_channels {chans}")

    @property
    def downsample_factor(self) -> int:
        """Image size / latent size."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True)
class SamplingConfig(Section):
    SECTION = "sampling"
    scheduler: str = setting("DDIMScheduler", choices=_schedulers)  # a diffusers class name from ddsm.sampling
    num_inference_steps: int = setting(50, gt=0)
    guidance_scale: float = setting(1.0, ge=0)  # classifier-free guidance (class-conditional models); 1.0 = off
    batch_size: int = setting(64, gt=0)


@dataclasses.dataclass(frozen=True)
class SearchConfig(Section):
    SECTION = "search"
    budget: float = setting(0.5, gt=0, le=1)  # fraction of the full-width MACs of the same sampler
    mode: str = setting("single", choices=SEARCH_MODES)
    population: int = setting(24, ge=2)
    generations: int = setting(12, ge=0)
    num_samples: int = setting(256, gt=0)     # images per candidate (common seeds)
    final_samples: int = setting(1024, gt=0)  # images for re-evaluating the top candidates
    top_k: int = setting(4, gt=0)             # candidates of the final choice (its first rung with halving)
    halving_eta: int = setting(1, ge=1)       # >= 2: successive halving num_samples -> final_samples; 1: off
    metric: str = setting("domain_fid", choices=_metrics)  # a name from ddsm.evaluation.METRICS
    allow_skip: bool = False
    segments: Optional[int] = setting(None, gt=0)  # group consecutive steps into this many genes
    crossover_prob: float = setting(0.7, ge=0, le=1)
    mutation_prob: float = setting(0.3, ge=0, le=1)
    mutation_gene_prob: float = setting(0.1, ge=0, le=1)
    seed: int = 0
