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


def load_model(model_dir: PathLike):
    """A SlimmableUNet from a save_pretrained directory, with a clear error when it is not one."""
    from .unet import SlimmableUNet

    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--model {str(path)!r} is not a SlimmableUNet directory (no config.json there); "
                                "expected the model/ folder that train/train_slimmable.py writes")
    return SlimmableUNet.from_pretrained(path).eval()


def load_model_or_config(model_dir: Optional[PathLike] = None, config_path: Optional[PathLike] = None):
    """The model of a directory, or a randomly initialised one from an experiment config's model section."""
    if model_dir:
        return load_model(model_dir)
    from .config import load_config

    return load_config(config_path).build_model().eval()
