"""Fuzz the schedule file reader: 1,200 seeded malformed variants of one real schedule file (a tiny SlimmableUNet,
DDIM, 10 steps, a skip, MACs, metrics, provenance), every one invalid by construction. Each must be refused with a
:class:`ScheduleError`: none accepted, none raising anything else. ``pytest -s`` prints the counts per kind.

The file format's rules that make each mutation invalid are written out here by hand (which keys are required, which
values have which type, the DDIM config's keys), never taken from the code under test. A mutation that could leave
the file valid is not generated; as a guard, one whose JSON equals the base file's is counted as ``noop`` and not
judged. A few valid variants (private or other schedulers' config keys, optional sections left out) must load.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import subprocess
import sys
import types
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from diffusers import DDIMScheduler

from conftest import tiny_unet_kwargs
from ddsm.config import ExperimentConfig
from ddsm.models import SlimmableUNet
from ddsm.sampling import SCHEDULERS
from ddsm.schedules import Schedule, ScheduleError

N_VARIANTS = 1200
STEPS = 10
WIDTHS = [1.0, 0.5, 0, 0.25, 0.75, 0.5, 0, 1.0, 0.25, 1.0]  # every choice used, skips inside
MACS = {0.25: 1305920, 0.5: 4609536, 0.75: 9910848, 1.0: 17209856}  # macs_table of tiny_unet_kwargs() (~10 s to count)

# Ground truth written by hand: DDIMScheduler's config keys and what each may hold.
DDIM_INT = ("num_train_timesteps", "steps_offset")
DDIM_FLOAT = ("beta_start", "beta_end", "dynamic_thresholding_ratio", "clip_sample_range", "sample_max_value")
DDIM_BOOL = ("clip_sample", "set_alpha_to_one", "thresholding", "rescale_betas_zero_snr")
DDIM_ENUM = {"beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
             "prediction_type": ("epsilon", "sample", "v_prediction"),
             "timestep_spacing": ("leading", "trailing", "linspace")}
MANDATORY_CONFIG = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
REQUIRED_TOP = ("format", "version", "model", "timesteps", "widths")
# Not a parameter of any diffusers scheduler (typos, junk); a leading "_" would make them private, hence valid.
UNKNOWN_CONFIG_KEYS = ("beta_strat", "num_train_timestep", "foo", "NaN", "", "Beta_start", "betaschedule")
UNKNOWN_CLASSES = ("FooScheduler", "ddimscheduler", "DDIMScheduler ", "", "DDIMPipeline", "SchedulerMixin",
                   "LCMScheduler", "FlowMatchEulerDiscreteScheduler", "UNet2DModel", "NaN")

Path_ = Tuple[Any, ...]


class Raw(str):
    """A token written into the JSON text verbatim (``1e999``, which Python's json reads as infinity)."""


class Dup(dict):
    """A JSON object written with one key twice: ``pairs`` in order."""

    def __init__(self, pairs):
        super().__init__(pairs)
        self.pairs = pairs


def dumps(obj: Any) -> str:
    if isinstance(obj, Raw):
        return str(obj)
    if isinstance(obj, Dup):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in obj.pairs) + "}"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, list):
        return "[" + ", ".join(dumps(v) for v in obj) + "]"
    return json.dumps(obj, allow_nan=True)  # NaN, Infinity, -Infinity as the non-standard JSON literals


def path_name(path: Path_) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def get(data: Any, path: Path_) -> Any:
    for p in path:
        data = data[p]
    return data


def put(data: Any, path: Path_, value: Any) -> None:
    get(data, path[:-1])[path[-1]] = value


def delete(data: Any, path: Path_) -> None:
    del get(data, path[:-1])[path[-1]]


# ----------------------------------------------------------------------------------------------------------------
# The base file
# ----------------------------------------------------------------------------------------------------------------


def build_base() -> str:
    model = SlimmableUNet(**tiny_unet_kwargs())
    config = ExperimentConfig.from_dict({"model": tiny_unet_kwargs()}).diffusion.scheduler_config()
    scheduler = DDIMScheduler.from_config(config)
    schedule = (Schedule.from_widths(model, scheduler, WIDTHS, num_inference_steps=STEPS,
                                     provenance={"search": {"budget": 0.5, "seed": 0, "generations": 3}})
                .with_macs(MACS).with_metrics({"fid": 12.5, "fid_features": "mnist-5k-16px-cnn-v1", "num_samples": 64}))
    return schedule.to_json()


@pytest.fixture(scope="module")
def base_text() -> str:
    return build_base()


# ----------------------------------------------------------------------------------------------------------------
# Mutations: each takes (rng, a fresh copy of the base data, the base text) and returns (file bytes, field path the
# error should name or None)
# ----------------------------------------------------------------------------------------------------------------


def numeric_paths(d: dict, free: bool = False) -> List[Path_]:
    """Paths of the numbers whose type the format fixes (``free``: also numbers inside metrics and provenance)."""
    paths: List[Path_] = [("version",), ("scheduler", "num_inference_steps"), ("macs", "total"), ("macs", "full"),
                          ("macs", "ratio")]
    paths += [("model", "width_choices", i) for i in range(len(d["model"]["width_choices"]))]
    paths += [(k, i) for k in ("timesteps", "widths") for i in range(len(d[k]))]
    paths += [("macs", "per_step", i) for i in range(len(d["macs"]["per_step"]))]
    paths += [("scheduler", "config", k) for k in DDIM_INT + DDIM_FLOAT]
    if free:
        paths += [("metrics", "fid"), ("metrics", "num_samples"), ("provenance", "search", "budget"),
                  ("provenance", "search", "seed")]
    return paths


def int_paths(d: dict) -> List[Path_]:
    """Numbers that must be ints (so a float or a bool there is wrong)."""
    return ([("version",), ("scheduler", "num_inference_steps")]
            + [("timesteps", i) for i in range(len(d["timesteps"]))]
            + [("scheduler", "config", k) for k in DDIM_INT])


def text(d: Any) -> bytes:
    return dumps(d).encode()


def m_delete_top(rng, d, base):
    key = rng.choice(REQUIRED_TOP)
    del d[key]
    return text(d), key


def m_delete_nested(rng, d, base):
    path = rng.choice([("model", "config_sha256"), ("model", "width_choices"), ("scheduler", "class_name"),
                       ("scheduler", "config"), ("scheduler", "num_inference_steps"), ("macs", "per_step"),
                       ("macs", "total"), ("macs", "full"), ("macs", "ratio")]
                      + [("scheduler", "config", k) for k in MANDATORY_CONFIG])
    delete(d, path)
    return text(d), path_name(path)


STRUCTURE_JUNK = {  # path -> values of a wrong type there (null only where null is not allowed)
    ("model",): [None, [], "model", 1, True],
    ("scheduler",): [[], "DDIMScheduler", 1, True],
    ("scheduler", "config"): [None, [], "{}", 1, True],
    ("scheduler", "class_name"): [None, 1, [], {}, True],
    ("timesteps",): [None, "900, 800", {}, 1, True],
    ("widths",): [None, "1.0, 0.5", {}, 1, True],
    ("macs",): [[], "macs", 1, True],
    ("macs", "per_step"): [None, "1, 2", {}, 1],
    ("metrics",): [[], "fid", 1, True],
    ("provenance",): [[], "by hand", 1, True],
    ("model", "width_choices"): [None, "0.25, 0.5", {}, 1.0],
    ("model", "config_sha256"): [None, 1, [], {}, True],
    ("format",): [None, 1, [], {}, True],
    ("scheduler", "config", "trained_betas"): ["linear", 1, True, {}, 0.5],
}


def m_wrong_type(rng, d, base):
    kind = rng.random()
    if kind < 0.35:
        path = rng.choice(list(STRUCTURE_JUNK))
        value = rng.choice(STRUCTURE_JUNK[path])
    elif kind < 0.55:
        path = rng.choice(numeric_paths(d))
        value = rng.choice(["1", "0.5", "", None, True, False, [], [1], {}, {"v": 1}])
    elif kind < 0.7:
        path = rng.choice(int_paths(d))
        value = get(d, path) + rng.choice([0.5, 0.25])  # a float where an int belongs (timesteps: mixed types)
    elif kind < 0.85:
        path = ("scheduler", "config", rng.choice(DDIM_BOOL))
        value = rng.choice([0, 1, 1.0, "true", "True", "false", None, [], {}])
    else:
        path = ("scheduler", "config", rng.choice(list(DDIM_ENUM)))
        value = rng.choice([0, 1.5, None, True, [], {}, ["linear"]])
    put(d, path, value)
    return text(d), path_name(path)


def m_nan_inf_number(rng, d, base):
    path = rng.choice(numeric_paths(d, free=True))
    put(d, path, rng.choice([math.nan, math.inf, -math.inf]))
    return text(d), path_name(path)


def m_nan_inf_string(rng, d, base):
    path = rng.choice(numeric_paths(d) + [("scheduler", "config", k) for k in DDIM_ENUM])
    put(d, path, rng.choice(["NaN", "Infinity", "-Infinity", "nan", "inf", "-inf"]))
    return text(d), path_name(path)


def m_string_for_number(rng, d, base):
    path = rng.choice(numeric_paths(d))
    value = get(d, path)
    put(d, path, rng.choice([str(value), json.dumps(value), f" {value}"]))
    return text(d), path_name(path)


def m_wrong_length(rng, d, base):
    n = len(d["timesteps"])
    kind = rng.randrange(7)
    if kind == 0:
        del d["widths"][rng.randrange(n)]
        return text(d), "widths"
    if kind == 1:
        d["widths"].append(rng.choice(d["model"]["width_choices"]))
        return text(d), "widths"
    if kind == 2:
        del d["timesteps"][rng.randrange(n)]
        return text(d), "timesteps"
    if kind == 3:
        del d["macs"]["per_step"][rng.randrange(n)]
        return text(d), "macs.per_step"
    if kind == 4:  # one more step in both lists (still sorted): num_inference_steps and the MACs no longer agree
        d["timesteps"].insert(0, d["timesteps"][0] + 50)
        d["widths"].insert(0, d["widths"][0])
        return text(d), "num_inference_steps"
    if kind == 5:
        d[rng.choice(["widths", "timesteps"])] = []
        return text(d), None
    d["macs"]["per_step"].append(d["macs"]["per_step"][0])
    return text(d), "macs.per_step"


def m_unknown_width(rng, d, base):
    if rng.random() < 0.75:
        i = rng.randrange(len(d["widths"]))
        d["widths"][i] = rng.choice([0.3, 0.6, 2.0, 1.5, 1e-9, 0.5000001, 0.125, 0.999, 0.001, 4])
        return text(d), f"widths[{i}]"
    used = sorted(set(d["widths"]) - {0})  # drop a used choice from width_choices: that width is now unknown
    d["model"]["width_choices"].remove(rng.choice(used))
    return text(d), "model.width_choices"


def m_skip_step0(rng, d, base):
    d["widths"][0] = rng.choice([0, 0.0, -0.0])
    return text(d), "widths[0]"


def m_unsorted_timesteps(rng, d, base):
    ts = d["timesteps"]
    kind = rng.randrange(3)
    if kind == 0:
        i, j = sorted(rng.sample(range(len(ts)), 2))
        ts[i], ts[j] = ts[j], ts[i]  # distinct values: the later step now has the larger timestep
    elif kind == 1:
        ts.reverse()
    else:
        i = rng.randrange(1, len(ts))
        ts.insert(rng.randrange(i), ts.pop(i))  # a later timestep moved earlier
    return text(d), "timesteps"


def m_duplicate_timesteps(rng, d, base):
    ts = d["timesteps"]
    i = rng.randrange(len(ts) - 2)
    j = rng.randrange(i + 2, len(ts))  # not neighbours: a smaller timestep lies between the two copies
    if rng.random() < 0.5:
        ts[j] = ts[i]
    else:
        ts[i] = ts[j]
    return text(d), "timesteps"


def m_scheduler_junk(rng, d, base):
    cfg = d["scheduler"]["config"]
    kind = rng.randrange(10)
    if kind == 0:
        d["scheduler"]["class_name"] = rng.choice(UNKNOWN_CLASSES)
        return text(d), "scheduler.class_name"
    if kind == 1:
        key = rng.choice(list(DDIM_ENUM))
        cfg[key] = rng.choice(["NaN", "", "LINEAR", cfg[key] + " ", cfg[key].upper(), "cosine", "eps", "none",
                               "sigmoid_"])
        return text(d), f"scheduler.config.{key}"
    if kind == 2:
        key = rng.choice(UNKNOWN_CONFIG_KEYS)
        cfg[key] = rng.choice([1, 0.5, "x", None, True, [], {}])
        return text(d), "scheduler.config"
    if kind == 3:
        cfg["num_train_timesteps"] = rng.choice([0, -1, -1000])
        return text(d), "scheduler.config.num_train_timesteps"
    if kind == 4:  # the timesteps reach 900: a 500-step noise schedule has no timestep 900
        cfg["num_train_timesteps"] = rng.choice([500, 900, 10])
        return text(d), "timesteps"
    if kind == 5:
        key = rng.choice(["beta_start", "beta_end"])
        cfg[key] = rng.choice([0, 0.0, -0.0001, 1.0, 1.5, -1])
        return text(d), f"scheduler.config.{key}"
    if kind == 6:
        cfg["beta_start"], cfg["beta_end"] = cfg["beta_end"], cfg["beta_start"]
        return text(d), "scheduler.config.beta_start"
    if kind == 7:
        cfg["trained_betas"] = rng.choice([["x"] * 1000, [0.01, None], [math.nan] * 1000, [0.01] * 7, "[0.01]"])
        return text(d), "scheduler.config.trained_betas"
    if kind == 8:
        key = rng.choice(DDIM_INT + DDIM_FLOAT + DDIM_BOOL + tuple(DDIM_ENUM))
        cfg[key] = {"value": cfg[key]} if rng.random() < 0.5 else [cfg[key]]
        return text(d), f"scheduler.config.{key}"
    d["scheduler"]["num_inference_steps"] = rng.choice([0, -1, -STEPS, STEPS + 1, STEPS - 1, 50, 1000])
    return text(d), "scheduler.num_inference_steps"


def m_truncated(rng, d, base):
    end = base.rindex("}")  # cut anywhere before the closing brace: the object is never closed
    return base.encode()[:rng.randrange(end)], None


def m_non_utf8(rng, d, base):
    raw = base.encode()
    at = rng.randrange(len(raw) + 1)
    bad = rng.choice([b"\xff", b"\xfe", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc3"])
    return raw[:at] + bad + raw[at:], None


def m_duplicate_keys(rng, d, base):
    path = rng.choice([(), ("model",), ("scheduler",), ("scheduler", "config"), ("macs",), ("metrics",),
                       ("provenance",), ("provenance", "search")])
    obj = get(d, path)
    pairs = list(obj.items())
    k, v = rng.choice(pairs)
    pairs.insert(rng.randrange(len(pairs) + 1), (k, v if rng.random() < 0.5 else "other"))
    if path:
        put(d, path, Dup(pairs))
    else:
        d = Dup(pairs)
    return text(d), None


def m_extra_keys(rng, d, base):
    where = rng.randrange(4)
    key = rng.choice(["widht", "extra", "Format", "_comment", "note", "Widths", "timesteps ", "NaN"])
    value = rng.choice([1, "x", None, [], {}, True])
    if where == 0:
        d[key] = value
        return text(d), None
    if where == 1:
        d["model"][key] = value
        return text(d), "model"
    if where == 2:
        d["scheduler"][key] = value
        return text(d), "scheduler"
    d["scheduler"]["config"][rng.choice(UNKNOWN_CONFIG_KEYS)] = value
    return text(d), "scheduler.config"


def m_huge_numbers(rng, d, base):
    if rng.random() < 0.4:  # read back as infinity
        path = rng.choice(numeric_paths(d, free=True))
        put(d, path, Raw(rng.choice(["1e999", "-1e999", "1E400"])))
        return text(d), path_name(path)
    huge = rng.choice([10 ** 30, 2 ** 64, 10 ** 400, 1e300, 1.7e308])
    path = rng.choice([("version",), ("scheduler", "num_inference_steps"), ("macs", "total"), ("timesteps", 0),
                       ("scheduler", "config", "beta_start"), ("scheduler", "config", "beta_end")]
                      + [("widths", i) for i in range(len(d["widths"]))]
                      + [("model", "width_choices", i) for i in range(len(d["model"]["width_choices"]))])
    if path[0] in ("version", "scheduler") and path[-1] in ("version", "num_inference_steps"):
        huge = int(huge)  # an int that is not the right one (a float would be a type error anyway)
    if path == ("timesteps", 0):
        huge = int(huge)  # still int, still sorted, but no DDPM noise schedule has that many steps
    put(d, path, huge)
    return text(d), path_name(path)


def m_negative_numbers(rng, d, base):
    paths = ([("version",), ("scheduler", "num_inference_steps"), ("macs", "total"), ("macs", "full"),
              ("macs", "ratio"), ("scheduler", "config", "num_train_timesteps"), ("scheduler", "config", "beta_start"),
              ("scheduler", "config", "beta_end"), ("timesteps", len(d["timesteps"]) - 1)]
             + [("widths", i) for i, w in enumerate(d["widths"]) if w != 0]
             + [("model", "width_choices", i) for i in range(len(d["model"]["width_choices"]))]
             + [("macs", "per_step", i) for i in range(len(d["macs"]["per_step"]))])
    path = rng.choice(paths)
    value = get(d, path)
    put(d, path, -abs(value) - (1 if isinstance(value, int) and value == 0 else 0))
    return text(d), path_name(path)


def m_bool_for_int(rng, d, base):
    path = rng.choice([("version",), ("scheduler", "num_inference_steps"), ("macs", "total"), ("macs", "per_step", 0)]
                      + [(k, i) for k in ("widths", "timesteps") for i in range(len(d[k]))]
                      + [("model", "width_choices", i) for i in range(len(d["model"]["width_choices"]))]
                      + [("scheduler", "config", k) for k in DDIM_INT])
    put(d, path, rng.choice([True, False]))
    return text(d), path_name(path)


def m_format_version(rng, d, base):
    if rng.random() < 0.5:
        d["format"] = rng.choice(["ddsm-schedul", "DDSM-SCHEDULE", "", "ddsm-schedule ", "schedule", "NaN"])
        return text(d), "format"
    d["version"] = rng.choice([0, 2, 1.0, "1", -1, 1.5, None])
    return text(d), "version"


MUTATIONS: Dict[str, Callable] = {
    "delete_top_key": m_delete_top, "delete_nested_key": m_delete_nested, "wrong_type": m_wrong_type,
    "nan_inf_number": m_nan_inf_number, "nan_inf_string": m_nan_inf_string, "string_for_number": m_string_for_number,
    "wrong_length": m_wrong_length, "unknown_width": m_unknown_width, "skip_at_step_0": m_skip_step0,
    "unsorted_timesteps": m_unsorted_timesteps, "duplicate_timesteps": m_duplicate_timesteps,
    "scheduler_junk": m_scheduler_junk, "truncated": m_truncated, "non_utf8": m_non_utf8,
    "duplicate_keys": m_duplicate_keys, "extra_keys": m_extra_keys, "huge_numbers": m_huge_numbers,
    "negative_numbers": m_negative_numbers, "bool_for_int": m_bool_for_int, "format_version": m_format_version,
}


def variants(base: str, n: int = N_VARIANTS):
    """(index, kind, file bytes, field the error should name) for ``n`` seeded mutations, kinds in turn."""
    kinds = list(MUTATIONS)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = random.Random(i)
        data, field = MUTATIONS[kind](rng, json.loads(base), base)
        yield i, kind, data, field


def _strict_pairs(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _same_as_base(data: bytes, base: str) -> bool:
    """Whether a mutation happened to leave the file's JSON as it was (then it is not judged)."""
    try:
        mutated = json.loads(data.decode("utf-8"), object_pairs_hook=_strict_pairs)
    except ValueError:
        return False
    return json.dumps(mutated, sort_keys=True) == json.dumps(json.loads(base), sort_keys=True)


def run_fuzz(base: str, tmp_path=None) -> Tuple[Dict[str, Counter], List[str]]:
    counts: Dict[str, Counter] = defaultdict(Counter)
    problems: List[str] = []
    for i, kind, data, field in variants(base):
        c = counts[kind]
        if _same_as_base(data, base):
            c["noop"] += 1
            continue
        c["total"] += 1
        path = None
        try:
            if tmp_path is not None and i % 20 == 0:  # some through a file, whose name the error must carry
                path = tmp_path / f"variant-{i}.json"
                path.write_bytes(data)
                Schedule.load(path)
            else:
                Schedule.from_json(data)
        except ScheduleError as e:
            c["refused"] += 1
            message = str(e)
            if "\n" in message:
                c["multi_line_message"] += 1
                problems.append(f"#{i} {kind}: multi-line message {message!r:.300}")
            if path is not None and not message.startswith(f"{path}: "):
                c["field_not_named"] += 1
                problems.append(f"#{i} {kind}: message does not start with the file name: {message!r:.300}")
            if field and field.startswith("scheduler.config") and "scheduler.config" not in message:
                c["field_not_named"] += 1
                problems.append(f"#{i} {kind}: message does not name {field}: {message!r:.300}")
        except Exception as e:  # noqa: BLE001 - the point is to count them
            c["other_exception"] += 1
            c[f"other:{type(e).__name__}"] += 1
            problems.append(f"#{i} {kind} ({field}): {type(e).__name__}: {e!s:.200}")
        else:
            c["accepted"] += 1
            problems.append(f"#{i} {kind} ({field}): accepted")
    return counts, problems


def format_counts(counts: Dict[str, Counter]) -> str:
    cols = ["total", "refused", "accepted", "other_exception", "noop", "field_not_named", "multi_line_message"]
    lines = [f"{'kind':<22}" + "".join(f"{c:>20}" for c in cols)]
    for kind in MUTATIONS:
        lines.append(f"{kind:<22}" + "".join(f"{counts[kind][c]:>20}" for c in cols))
    total = sum(counts.values(), Counter())
    lines.append(f"{'ALL':<22}" + "".join(f"{total[c]:>20}" for c in cols))
    others = sorted(k for k in total if k.startswith("other:"))
    if others:
        lines.append("other exceptions: " + ", ".join(f"{k[6:]} x{total[k]}" for k in others))
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------


def test_the_base_file_is_valid(base_text):
    schedule = Schedule.from_json(base_text)
    assert len(schedule) == STEPS and schedule.scheduler_class_name == "DDIMScheduler"
    data = json.loads(base_text)
    assert set(MANDATORY_CONFIG) | set(DDIM_INT + DDIM_FLOAT + DDIM_BOOL) | set(DDIM_ENUM) <= set(
        data["scheduler"]["config"]), "the hand-written DDIM key table no longer matches the base file"
    assert data["timesteps"] == list(range(900, -1, -100)) and sorted(set(data["widths"]) - {0}) == [0.25, 0.5, 0.75,
                                                                                                   1.0]


def test_fuzzed_schedules_are_all_refused_with_a_schedule_error(base_text, tmp_path):
    counts, problems = run_fuzz(base_text, tmp_path)
    table = format_counts(counts)
    print("\n" + table)
    total = sum(counts.values(), Counter())
    assert total["total"] >= 1000, table
    assert len(counts) == len(MUTATIONS) and all(counts[k]["total"] >= 40 for k in MUTATIONS), table
    bad = total["accepted"] + total["other_exception"] + total["field_not_named"] + total["multi_line_message"]
    assert bad == 0, table + "\nfirst problems:\n" + "\n".join(problems[:40])


def test_variants_are_seeded(base_text):
    first = [(k, d) for _, k, d, _ in variants(base_text, 60)]
    assert first == [(k, d) for _, k, d, _ in variants(base_text, 60)]


def _valid_variants(base: str) -> Dict[str, Any]:
    """Changes that keep the file valid: the reader must not refuse them."""
    out = {}

    def variant(name: str, change: Callable[[dict], Optional[dict]]) -> None:
        d = json.loads(base)
        change(d)
        out[name] = d

    variant("private config keys", lambda d: d["scheduler"]["config"].update(
        _class_name="DDIMScheduler", _diffusers_version="0.30.0", _comment="by hand"))
    variant("another scheduler's config key", lambda d: d["scheduler"]["config"].update(
        skip_prk_steps=True, solver_order=2, use_karras_sigmas=False))
    variant("optional config key left out (diffusers' default)", lambda d: [
        d["scheduler"]["config"].pop(k) for k in ("clip_sample", "thresholding", "rescale_betas_zero_snr")])
    variant("int for a float", lambda d: d["scheduler"]["config"].update(clip_sample_range=1, sample_max_value=2))
    variant("untied", lambda d: d.update(scheduler=None))
    variant("no macs, metrics, provenance", lambda d: [d.update(macs=None, metrics=None), d.pop("provenance")])
    variant("extra macs key", lambda d: d["macs"].update(decode=123))
    variant("free-form metrics", lambda d: d["metrics"].update(note="NaN", fid=None, extra=[1, "x", {"a": True}]))
    variant("width written as an int", lambda d: d["widths"].__setitem__(0, 1))
    variant("trained betas", lambda d: d["scheduler"]["config"].update(trained_betas=[0.01] * 1000))
    variant("Stable Diffusion's PNDM config, with DDIM's clip_sample", lambda d: d["scheduler"].update(config={
        "_class_name": "PNDMScheduler", "_diffusers_version": "0.7.0.dev0", "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
        "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None,
        "clip_sample": False}))
    return out


def test_valid_variants_still_load(base_text):
    refused = {}
    for name, data in _valid_variants(base_text).items():
        try:
            Schedule.from_json(json.dumps(data))
        except ScheduleError as e:
            refused[name] = str(e)
    assert not refused, refused


@pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")  # KDPM2 under numpy 2
@pytest.mark.parametrize("name", SCHEDULERS)
def test_schedules_of_every_supported_scheduler_load(name):
    """No false refusal: what every supported scheduler gives (default and common configs, repeated or float32-
    rounded timesteps of Heun, PNDM, KDPM2, DPM-Solver at 999 steps) loads back, and the loaded scheduler section
    builds a scheduler that visits the same timesteps."""
    import diffusers

    from ddsm.sampling import build_scheduler, set_timestep_count

    model = types.SimpleNamespace(config={"width_choices": [0.5, 1.0]})
    cls = getattr(diffusers, name)
    taken = set(inspect.signature(cls.__init__).parameters)
    variants = [{}, {"num_train_timesteps": 100, "beta_schedule": "squaredcos_cap_v2"},
                {"timestep_spacing": "trailing", "steps_offset": 1, "prediction_type": "v_prediction"},
                {"use_karras_sigmas": True}, {"trained_betas": [0.001 + 0.01 * i / 999 for i in range(1000)]}]
    for extra in variants:
        config = {**dict(cls().config), **{k: v for k, v in extra.items() if k in taken}}
        for n in (10,) if "KDPM2" in name else (1, 10, 25, 999):  # KDPM2 is slow to set up (~1 s per call)
            scheduler = cls.from_config(config)
            try:
                scheduler.set_timesteps(n)
            except (ValueError, IndexError):  # e.g. PNDM cannot take 999 steps of 1000: nothing to schedule
                continue
            schedule = Schedule.uniform(model, scheduler, 1.0)
            loaded = Schedule.from_json(schedule.to_json())
            assert loaded == schedule, (name, extra, n)
            again = build_scheduler(loaded.scheduler_class_name, dict(loaded.scheduler_config))
            set_timestep_count(again, len(loaded))
            loaded.check_scheduler(again)


# ----------------------------------------------------------------------------------------------------------------
# The CLIs: a malformed schedule is one line on stderr ("error: ..."), a non-zero exit, never a traceback
# ----------------------------------------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
CLI_STEPS = 4


def _script(path):
    """Import a CLI script as a module, to call its main(argv) in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem + "_fuzz_cli", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cfg(d: dict) -> dict:
    return d["scheduler"]["config"]


CLI_CASES = {  # name -> change to the base file's JSON object, or to its bytes
    "NaN string in the scheduler config": lambda d: _cfg(d).update(beta_start="NaN"),
    "scheduler config key deleted": lambda d: _cfg(d).pop("beta_schedule"),
    "string for a bool in the scheduler config": lambda d: _cfg(d).update(clip_sample="false"),
    "unknown scheduler config key": lambda d: _cfg(d).update(beta_strat=0.001),
    "unsupported scheduler": lambda d: d["scheduler"].update(class_name="LCMScheduler"),
    "timesteps past the noise schedule": lambda d: _cfg(d).update(num_train_timesteps=500),
    "skip at step 0": lambda d: d["widths"].__setitem__(0, 0),
    "unsorted timesteps": lambda d: d["timesteps"].reverse(),
    "bool for an int": lambda d: d["scheduler"].update(num_inference_steps=True),
    "huge int width choice": lambda d: d["model"]["width_choices"].__setitem__(0, 10 ** 400),
    "truncated": b"truncate",
    "not UTF-8": b"\xff",
    "duplicate key": b"dup",
}


def _malformed(base: str, change) -> bytes:
    if change == b"truncate":
        return base.encode()[: len(base) // 2]
    if change == b"dup":
        return base.replace('"widths":', '"widths": [1.0], "widths":', 1).encode()
    if isinstance(change, bytes):
        return base.encode().replace(b'"provenance"', change + b'"provenance"', 1)
    d = json.loads(base)
    change(d)
    return dumps(d).encode()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """A tiny training run (model/ and config.yaml beside it, as training writes them) and its valid schedule."""
    root = tmp_path_factory.mktemp("fuzz-run")
    model = SlimmableUNet(**tiny_unet_kwargs())
    model.save_pretrained(root / "model")
    cfg = ExperimentConfig.from_dict({"model": tiny_unet_kwargs()})
    cfg.save(root / "config.yaml")
    scheduler = DDIMScheduler.from_config(cfg.diffusion.scheduler_config())
    Schedule.ramp(model, scheduler, 0.25, 1.0, 0.5, num_inference_steps=CLI_STEPS).save(root / "schedule.json")
    return root


def _cli_argv(cli: str, root: Path, schedule: Path, out: Path) -> List[str]:
    common = ["--model", str(root / "model"), "--schedule", str(schedule), "--output-dir", str(out)]
    if cli == "eval/evaluate.py":
        return common + ["--num-samples", "2", "--no-inception"]
    return common + ["--num-samples", "1"]


@pytest.mark.parametrize("cli", ["eval/evaluate.py", "eval/sample.py"])
def test_cli_refuses_malformed_schedules_in_one_line(cli, cli_run, tmp_path, capfd, fast_domain_features):
    main = _script(cli).main
    base = (cli_run / "schedule.json").read_text()
    failures = {}
    for name, change in CLI_CASES.items():
        path = tmp_path / f"{len(failures)}-{name.replace(' ', '_')}.json"
        path.write_bytes(_malformed(base, change))
        try:
            code = main(_cli_argv(cli, cli_run, path, tmp_path / "out"))
        except SystemExit as e:  # argparse
            code = e.code
        except Exception as e:  # noqa: BLE001 - an escaping exception is the traceback a user would see
            code = f"raised {type(e).__name__}: {e}"
        err = capfd.readouterr().err.strip()
        if code in (0, None) or isinstance(code, str) or len(err.splitlines()) != 1 or not err.startswith("error: ") \
                or "Traceback" in err or str(path) not in err:
            failures[name] = (code, err[-600:])
    assert not failures, "\n".join(f"{k}: exit {c!r}, stderr {e!r}" for k, (c, e) in failures.items())


def test_evaluate_cli_process_prints_no_traceback(cli_run, tmp_path):
    """One real process: exit code 2 and a one-line error, as a user sees it."""
    bad = tmp_path / "bad.json"
    base = (cli_run / "schedule.json").read_text()
    bad.write_bytes(_malformed(base, CLI_CASES["NaN string in the scheduler config"]))
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "eval/evaluate.py", *_cli_argv("eval/evaluate.py", cli_run, bad, tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr and res.stderr.strip().splitlines()[-1].startswith("error: "), res.stderr
    assert "scheduler.config.beta_start = 'NaN' must be a number" in res.stderr
