"""Helpers shared by the thin command-line scripts in train/, search/ and eval/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .utils import PathLike


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
