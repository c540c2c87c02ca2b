"""Small shared helpers: atomic file writes and the config fingerprint.

Every file the toolkit writes goes through :func:`atomic_write` so that a crash (or Ctrl-C) never leaves a
half-written file behind: the bytes go to a temporary file in the same directory, are flushed to disk, and the
temporary file is renamed over the target (``os.replace`` is atomic on POSIX and Windows).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Union

import numpy as np

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it over ``path``, on error delete it.

    Use for writers that insist on a file name (``np.savez``, ``PIL.Image.save``, ``matplotlib.savefig``)::

        with atomic_path("grid.png") as tmp:
            image.save(tmp, format="PNG")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: PathLike, data: Union[bytes, str]) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically and return the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    return Path(path)


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> Path:
    """Write ``obj`` as pretty JSON (NaN refused: it is not valid JSON) atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def atomic_savez(path: PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` to ``path`` atomically (no ``.npz`` is appended to the name)."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write(path, buf.getvalue())


def to_plain(value: Any) -> Any:
    """JSON-ready copy: mappings -> dicts with str keys, tuples -> lists, numpy scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def canonical_config(config: Mapping[str, Any]) -> dict:
    """The part of a diffusers-style config that defines the model: private keys (``_class_name``,
    ``_diffusers_version``, ``_name_or_path``...) dropped, tuples turned into lists."""
    return {k: to_plain(v) for k, v in config.items() if not str(k).startswith("_")}


def config_sha256(config: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of a model config: the model's fingerprint that
    schedule files carry in ``model.config_sha256``."""
    text = json.dumps(canonical_config(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def default_cache_dir() -> Path:
    """Where derived artefacts (MACs tables, reference statistics, feature classifiers) are cached:
    ``$DDSM_CACHE`` if set, else ``$XDG_CACHE_HOME/ddsm`` or ``~/.cache/ddsm``."""
    if os.environ.get("DDSM_CACHE"):
        return Path(os.environ["DDSM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ddsm"
