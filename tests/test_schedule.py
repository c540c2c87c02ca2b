"""Tests for ddsm.schedules: the schedule value object, its JSON file, builders, remapping and DDSM import.

The model is a stand-in (anything with ``.config``); schedulers are real diffusers schedulers. Expected widths are
written out by hand (from the DDIM / DDPM / Euler timesteps), never recomputed with the code under test.
"""

import copy
import dataclasses
import json
import math
import os
import pickle
import tempfile
import types
from pathlib import Path

import pytest
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ddsm.schedules import FingerprintMismatchWarning, Schedule, ScheduleError, parse_ddsm_official
from ddsm.utils import config_sha256

CHOICES = [0.25, 0.5, 0.75, 1.0]
MODEL = types.SimpleNamespace(config={"width_choices": CHOICES, "sample_size": 16, "block_out_channels": [8, 16]})
# The same architecture at another resolution: another fingerprint.
OTHER_MODEL = types.SimpleNamespace(config={**MODEL.config, "sample_size": 32})

DDIM50 = list(range(980, -1, -20))  # DDIMScheduler().set_timesteps(50), default "leading" spacing
DDIM10 = list(range(900, -1, -100))
DDIM5 = [800, 600, 400, 200, 0]


def ddim(n):
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(n)
    return scheduler


def test_scheduler_timesteps_are_what_the_tests_assume():
    assert ddim(50).timesteps.tolist() == DDIM50
    assert ddim(10).timesteps.tolist() == DDIM10
    assert ddim(5).timesteps.tolist() == DDIM5


# ----------------------------------------------------------------------------------------------------------------
# JSON round trip and file structure
# ----------------------------------------------------------------------------------------------------------------


def full_example():
    schedule = Schedule.from_widths(MODEL, ddim(5), [1.0, 0, 0.5, 0.75, 0.25], provenance={"search": {"seed": 3}})
    return (schedule.with_macs({0.25: 384, 0.5: 1524, 0.75: 3420, 1.0: 6071})
            .with_metrics({"fid": 3.55, "fid_features": "inception-2015-12-05", "num_samples": 4096}))


def test_save_load_round_trip_and_file_matches_design(tmp_path):
    schedule = full_example()
    path = schedule.save(tmp_path / "schedule.json")
    assert os.listdir(tmp_path) == ["schedule.json"]  # atomic write left no temporary file
    assert Schedule.load(path, MODEL) == schedule
    assert Schedule.from_json(schedule.to_json()) == schedule

    data = json.loads(path.read_text())
    assert list(data) == ["format", "version", "model", "scheduler", "timesteps", "widths", "macs", "metrics",
                          "provenance"]
    assert data["format"] == "ddsm-schedule" and data["version"] == 1
    assert data["model"] == {"config_sha256": config_sha256(MODEL.config), "width_choices": CHOICES}
    assert list(data["scheduler"]) == ["class_name", "config", "num_inference_steps"]
    assert data["scheduler"]["class_name"] == "DDIMScheduler"
    assert data["scheduler"]["num_inference_steps"] == 5
    assert data["scheduler"]["config"]["timestep_spacing"] == "leading"
    assert DDIMScheduler.from_config(data["scheduler"]["config"]).config["steps_offset"] == 0
    assert data["timesteps"] == DDIM5
    assert data["widths"] == [1.0, 0, 0.5, 0.75, 0.25]
    assert data["macs"] == {"per_step": [6071, 0, 1524, 3420, 384], "total": 11399, "full": 30355,
                            "ratio": 11399 / 30355}
    assert data["metrics"] == {"fid": 3.55, "fid_features": "inception-2015-12-05", "num_samples": 4096}
    assert data["provenance"]["search"] == {"seed": 3}
    assert data["provenance"]["builder"] == {"name": "from_widths"}
    assert "tool_version" in data["provenance"]


def test_loads_a_hand_written_file_in_the_design_format(tmp_path):
    text = json.dumps({
        "format": "ddsm-schedule", "version": 1,
        "model": {"config_sha256": config_sha256(MODEL.config), "width_choices": [0.25, 0.5, 0.75, 1]},
        "scheduler": {"class_name": "DDIMScheduler", "num_inference_steps": 3, "config": {
            "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
            "steps_offset": 1}},
        "timesteps": [981, 491, 1], "widths": [0.5, 0, 1],
        "macs": None, "metrics": None, "provenance": {"note": "by hand"},
    })
    (tmp_path / "s.json").write_text(text)
    schedule = Schedule.load(tmp_path / "s.json", MODEL)
    assert schedule.widths == (0.5, 0.0, 1.0) and all(type(w) is float for w in schedule.widths)
    assert schedule.timesteps == (981, 491, 1)
    assert schedule.width_choices == (0.25, 0.5, 0.75, 1.0)


def test_schedule_is_immutable():
    schedule = full_example()
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.widths = (1.0,) * 5
    with pytest.raises(TypeError):
        schedule.provenance["search"] = {}
    with pytest.raises(TypeError):
        schedule.macs["total"] = 0
    assert isinstance(schedule.widths, tuple) and isinstance(schedule.macs["per_step"], tuple)
    hash(schedule)


def test_schedule_pickles_and_copies():
    schedule = full_example()
    for clone in (pickle.loads(pickle.dumps(schedule)), copy.deepcopy(schedule), copy.copy(schedule)):
        assert clone == schedule and clone.to_json() == schedule.to_json()
    assert DDIMScheduler.from_config(schedule.scheduler_config).config["timestep_spacing"] == "leading"


def test_dpmsolver_config_with_infinite_default_is_stored_as_json(tmp_path):
    scheduler = DPMSolverMultistepScheduler()
    assert scheduler.config["lambda_min_clipped"] == -math.inf
    schedule = Schedule.uniform(MODEL, scheduler, 1.0, num_inference_steps=20)
    path = schedule.save(tmp_path / "s.json")
    assert "Infinity" not in path.read_text()
    rebuilt = DPMSolverMultistepScheduler.from_config(Schedule.load(path).scheduler_config)
    assert rebuilt.config["lambda_min_clipped"] == -math.inf
    assert rebuilt.config["solver_order"] == 2


# ----------------------------------------------------------------------------------------------------------------
# Malformed schedules: each raises ScheduleError naming the field and the values
# ----------------------------------------------------------------------------------------------------------------


def base_dict():
    return full_example().to_dict()


def _set(path, value):
    def mutate(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] = value
    return mutate


def _delete(path):
    def mutate(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        del d[last]
    return mutate


MALFORMED = [
    ("format", _set(["format"], "ddsm-schedul"), r"format: expected 'ddsm-schedule', got 'ddsm-schedul'"),
    ("version 2", _set(["version"], 2), r"version: expected 1, got 2"),
    ("version str", _set(["version"], "1"), r"version: expected 1, got '1'"),
    ("version bool", _set(["version"], True), r"version: expected 1, got True"),
    ("string width", _set(["widths", 2], "0.5"), r"widths\[2\] = '0.5' must be a number, got str"),
    ("bool width", _set(["widths", 4], True), r"widths\[4\] = True must be a number, got bool"),
    ("null width", _set(["widths", 3], None), r"widths\[3\] = None must be a number, got NoneType"),
    ("float timestep", _set(["timesteps", 1], 600.5),
     r"timesteps\[1\] = 600.5 is float but timesteps\[0\] = 800 is int"),
    ("string timestep", _set(["timesteps", 1], "600"), r"timesteps\[1\] = '600' must be a number, got str"),
    ("bool timestep", _set(["timesteps", 0], False), r"timesteps\[0\] = False must be a number, got bool"),
    ("short widths", _set(["widths"], [1.0, 0, 0.5, 0.75]), r"len\(widths\) = 4 != len\(timesteps\) = 5"),
    ("long timesteps", _set(["timesteps"], [900] + DDIM5), r"len\(widths\) = 5 != len\(timesteps\) = 6"),
    ("width not a choice", _set(["widths", 3], 0.6),
     r"widths\[3\] = 0.6 \(timestep 200\) is not in model.width_choices \[0.25, 0.5, 0.75, 1.0\] and is not 0"),
    ("skip at step 0", _set(["widths", 0], 0), r"widths\[0\] = 0 is a skip at step 0 \(timestep 800\)"),
    ("nan width", _set(["widths", 2], math.nan), r"widths\[2\] = nan is not finite"),
    ("inf width", _set(["widths", 2], math.inf), r"widths\[2\] = inf is not finite"),
    ("nan timestep", _set(["timesteps", 3], math.nan), r"timesteps\[3\] = nan is not finite"),
    ("nan metric", _set(["metrics", "fid"], math.nan), r"metrics.fid = nan is not finite"),
    ("inf provenance", _set(["provenance", "search", "seed"], -math.inf), r"provenance.search.seed = -inf is not"),
    ("nan macs total", _set(["macs", "total"], math.nan), r"macs.total = nan is not finite"),
    ("empty", lambda d: (_set(["timesteps"], [])(d), _set(["widths"], [])(d), _set(["macs"], None)(d),
                         _set(["scheduler"], None)(d)), r"timesteps is empty"),
    ("duplicate width choice", _set(["model", "width_choices"], [0.25, 0.5, 0.5, 0.75, 1.0]),
     r"model.width_choices has duplicate value\(s\) \[0.5\]: \[0.25, 0.5, 0.5, 0.75, 1.0\]"),
    ("zero width choice", _set(["model", "width_choices"], [0, 0.25, 0.5, 0.75, 1.0]),
     r"model.width_choices\[0\] = 0 must be > 0"),
    ("empty width choices", _set(["model", "width_choices"], []), r"model.width_choices is empty"),
    ("steps != length", _set(["scheduler", "num_inference_steps"], 50),
     r"scheduler.num_inference_steps = 50 != len\(timesteps\) = 5"),
    ("steps float", _set(["scheduler", "num_inference_steps"], 5.0),
     r"scheduler.num_inference_steps = 5.0 must be an int, got float"),
    ("bad sha", _set(["model", "config_sha256"], "abc123"), r"model.config_sha256 = 'abc123' is not a sha256"),
    ("unknown key", _set(["widht"], [1.0]), r"unknown key\(s\) \['widht'\]"),
    ("missing widths", _delete(["widths"]), r"missing key\(s\) \['widths'\]"),
    ("scheduler keys", _delete(["scheduler", "config"]),
     r"scheduler: expected keys \['class_name', 'config', 'num_inference_steps'\], got \['class_name', 'num_"),
    ("model keys", _set(["model", "extra"], 1), r"model: expected keys"),
    ("widths as text", _set(["widths"], "1.0, 0, 0.5"), r"widths must be a list, got str '1.0, 0, 0.5'"),
    ("cost at a skip", _set(["macs", "per_step", 1], 5), r"macs.per_step\[1\] = 5 but widths\[1\] = 0 \(skip\)"),
    ("total != sum", _set(["macs", "total"], 1), r"macs.total = 1 != sum\(macs.per_step\) = 11399"),
    ("ratio", _set(["macs", "ratio"], 0.5), r"macs.ratio = 0.5 != macs.total / macs.full = 0.375"),
    ("per_step length", _set(["macs", "per_step"], [6071, 0]), r"len\(macs.per_step\) = 2 != len\(widths\) = 5"),
    ("macs keys", _delete(["macs", "full"]), r"macs is missing key\(s\) \['full'\]"),
    ("unsorted timesteps", _set(["timesteps"], [800, 600, 200, 400, 0]),
     r"timesteps\[3\] = 400 > timesteps\[2\] = 200: timesteps are in sampling order"),
    ("huge int", _set(["model", "width_choices", 0], 10 ** 400),
     r"model.width_choices\[0\] = 10000000000000000000\.\.\. \(401 digits\) is too large for a float"),
    ("unsupported scheduler", _set(["scheduler", "class_name"], "LCMScheduler"),
     r"scheduler.class_name = 'LCMScheduler' is not a supported scheduler \(it needs a consistency-distilled"),
    ("unknown scheduler", _set(["scheduler", "class_name"], "DDIMScheduler "),
     r"scheduler.class_name = 'DDIMScheduler ' is not a supported scheduler; expected one of \['DDPMScheduler'"),
    ("config NaN string", _set(["scheduler", "config", "beta_start"], "NaN"),
     r"scheduler.config.beta_start = 'NaN' must be a number, got str"),
    ("config bool for int", _set(["scheduler", "config", "steps_offset"], True),
     r"scheduler.config.steps_offset = True must be an int, got bool"),
    ("config float for int", _set(["scheduler", "config", "num_train_timesteps"], 1000.0),
     r"scheduler.config.num_train_timesteps = 1000.0 must be an int, got float"),
    ("config string for bool", _set(["scheduler", "config", "clip_sample"], "false"),
     r"scheduler.config.clip_sample = 'false' must be true/false, got str"),
    ("config enum", _set(["scheduler", "config", "timestep_spacing"], "lead"),
     r"scheduler.config.timestep_spacing = 'lead' must be one of \['leading', 'trailing', 'linspace'\]"),
    ("config unknown key", _set(["scheduler", "config", "beta_strat"], 0.001),
     r"scheduler.config.beta_strat = 0.001 is not a setting of DDIMScheduler nor of any supported scheduler"),
    ("config key missing", _delete(["scheduler", "config", "beta_start"]),
     r"scheduler.config.beta_start is missing: expected a number, the noise schedule the model was trained with"),
    ("config betas swapped", _set(["scheduler", "config", "beta_start"], 0.5),
     r"scheduler.config.beta_start = 0.5 must be < scheduler.config.beta_end = 0.02"),
    ("config nested", _set(["scheduler", "config", "beta_end"], [0.02]),
     r"scheduler.config.beta_end = \[0.02\] must be a number, got list"),
    ("config trained betas", _set(["scheduler", "config", "trained_betas"], [0.01] * 10),
     r"len\(scheduler.config.trained_betas\) = 10 != scheduler.config.num_train_timesteps = 1000"),
    ("beta_schedule the class lacks", _set(["scheduler", "config", "beta_schedule"], "sigmoid"),
     r"scheduler.config: DDIMScheduler cannot be built from it: NotImplementedError: sigmoid"),
    ("timestep past training", _set(["scheduler", "config", "num_train_timesteps"], 500),
     r"timesteps\[0\] = 800 is outside \[0, scheduler.config.num_train_timesteps = 500\)"),
    ("scheduler section names the key", _set(["scheduler", "extra"], 1), r"\(scheduler.extra is unknown\)"),
]


@pytest.mark.parametrize("name,mutate,match", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_schedule_is_rejected(name, mutate, match):
    data = base_dict()
    Schedule.from_dict(data)  # the base is valid
    mutate(data)
    with pytest.raises(ScheduleError, match=match):
        Schedule.from_dict(data)


def test_malformed_cases_are_rejected_through_json_too(tmp_path):
    text = full_example().to_json().replace('"widths": [1.0, 0, 0.5', '"widths": [1.0, 0, NaN', 1)
    assert "NaN" in text
    (tmp_path / "nan.json").write_text(text)
    with pytest.raises(ScheduleError, match=r"nan.json: widths\[2\] = nan is not finite"):
        Schedule.load(tmp_path / "nan.json")


@pytest.mark.parametrize("text,match", [
    ("{not json", r"bad.json: invalid JSON: Expecting property name"),
    ("", r"bad.json: invalid JSON"),
    ("[1, 2]", r"bad.json: a schedule must be a JSON object, got list"),
    ('{"format": "ddsm-schedule", "format": "x"}', r"bad.json: duplicate key\(s\) \['format'\]"),
    (b"\xff\xfe{", r"bad.json: invalid JSON"),
])
def test_malformed_json_file_names_the_path(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ScheduleError, match=match):
        Schedule.load(path)


def test_scheduler_fields_go_together():
    with pytest.raises(ScheduleError, match=r"must be given together \(got class_name='DDIMScheduler', config=None"):
        Schedule(timesteps=DDIM5, widths=[1.0] * 5, width_choices=CHOICES, config_sha256=config_sha256(MODEL.config),
                 scheduler_class_name="DDIMScheduler", num_inference_steps=5)


# ----------------------------------------------------------------------------------------------------------------
# Property tests
# ----------------------------------------------------------------------------------------------------------------

CHOICE_POOL = [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0]
json_scalars = st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                                                                                    allow_infinity=False) | st.text(
    max_size=8)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=5), inner, max_size=3), max_leaves=8)


# Tied schedules carry a real scheduler config (the reader checks it against diffusers), plus private keys.
TIED_CONFIGS = [(cls.__name__, dict(cls(**kw).config)) for cls, kw in [
    (DDIMScheduler, {}), (DDIMScheduler, {"steps_offset": 1, "beta_schedule": "scaled_linear", "beta_end": 0.012}),
    (EulerDiscreteScheduler, {}), (EulerDiscreteScheduler, {"use_karras_sigmas": True, "prediction_type": "v_prediction"})]]


@st.composite
def schedules(draw):
    """Valid schedules: timesteps never increase (sampling order); a tied one's lie in [0, num_train_timesteps)."""
    choices = draw(st.lists(st.sampled_from(CHOICE_POOL), min_size=1, max_size=len(CHOICE_POOL), unique=True))
    n = draw(st.integers(1, 40))
    tied = draw(st.booleans())
    low, high = (0, 999) if tied else (-5, 2000)
    if draw(st.booleans()):
        timesteps = draw(st.lists(st.integers(low, high), min_size=n, max_size=n, unique=True))
    else:
        timesteps = draw(st.lists(st.floats(low, min(high, 1000) - (1e-3 if tied else 0), allow_nan=False),
                                  min_size=n, max_size=n))
    timesteps = sorted(timesteps, reverse=True)
    widths = [draw(st.sampled_from(choices))] + draw(st.lists(st.sampled_from(choices + [0]), min_size=n - 1,
                                                             max_size=n - 1))
    scheduler = {}
    if tied:
        name, config = draw(st.sampled_from(TIED_CONFIGS))
        private = draw(st.dictionaries(st.text(max_size=5).map(lambda k: "_" + k), json_values, max_size=3))
        scheduler = {"scheduler_class_name": name, "num_inference_steps": n,
                     "scheduler_config": {k: v for k, v in {**config, **private}.items()
                                          if not (isinstance(v, float) and math.isinf(v))}}
    schedule = Schedule(timesteps=timesteps, widths=widths, width_choices=choices,
                        config_sha256=draw(st.text("0123456789abcdef", min_size=64, max_size=64)),
                        metrics=draw(st.none() | st.dictionaries(st.text(max_size=6), json_values, max_size=3)),
                        provenance=draw(st.dictionaries(st.text(max_size=6), json_values, max_size=3)), **scheduler)
    if draw(st.booleans()):
        table = {w: draw(st.integers(1, 10**12)) for w in choices}
        schedule = schedule.with_macs(table)
    return schedule


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules())
def test_random_valid_schedules_round_trip(schedule):
    assert Schedule.from_json(schedule.to_json()) == schedule
    assert Schedule.from_dict(json.loads(json.dumps(schedule.to_dict()))).to_dict() == schedule.to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        assert Schedule.load(schedule.save(Path(tmp) / "s.json")) == schedule


BAD_VALUES = st.sampled_from(["1.0", None, True, False, math.nan, math.inf, -math.inf, [1.0], {"w": 1.0}])


@st.composite
def corruptions(draw):
    """A valid schedule's JSON object and a corrupted copy that must be rejected."""
    schedule = draw(schedules())
    data = json.loads(json.dumps(schedule.to_dict()))
    n = len(schedule)
    kinds = ["width", "bad_width", "bad_timestep", "drop", "append", "skip0", "format", "version", "dup_choice",
             "sha", "metric"]
    if n >= 2:
        kinds.append("mixed_timestep")
    if schedule.is_tied:
        kinds.append("steps")
    kind = draw(st.sampled_from(kinds))
    i = draw(st.integers(0, n - 1))
    if kind == "width":  # a number that is neither a choice nor 0
        data["widths"][i] = draw(st.floats(allow_nan=False).filter(
            lambda w: w != 0 and w not in schedule.width_choices))
    elif kind == "bad_width":
        data["widths"][i] = draw(BAD_VALUES)
    elif kind == "bad_timestep":
        data["timesteps"][i] = draw(BAD_VALUES)
    elif kind == "mixed_timestep":
        t = data["timesteps"][i]
        data["timesteps"][i] = float(t) if isinstance(t, int) else int(t)
        if i == 0:  # make sure the list really is mixed: step 1 keeps the old type
            assert type(data["timesteps"][1]) is not type(data["timesteps"][0])
    elif kind == "drop":
        del data[draw(st.sampled_from(["widths", "timesteps"]))][i]
    elif kind == "append":
        data["widths"].append(schedule.width_choices[0])
    elif kind == "skip0":
        data["widths"][0] = 0
    elif kind == "format":
        data["format"] = draw(st.text(max_size=20).filter(lambda s: s != "ddsm-schedule"))
    elif kind == "version":
        data["version"] = draw(st.sampled_from([0, 2, "1", 1.0, True, None]))
    elif kind == "dup_choice":
        data["model"]["width_choices"].append(data["model"]["width_choices"][0])
    elif kind == "sha":
        data["model"]["config_sha256"] = draw(st.text(max_size=70).filter(
            lambda s: len(s) != 64 or any(c not in "0123456789abcdef" for c in s)))
    elif kind == "metric":
        data["metrics"] = {**(data["metrics"] or {}), "fid": draw(st.sampled_from([math.nan, math.inf]))}
    elif kind == "steps":
        data["scheduler"]["num_inference_steps"] = n + draw(st.integers(-n, 100).filter(lambda k: k != 0))
    return kind, data


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(corruptions())
def test_random_corruptions_are_rejected(corruption):
    kind, data = corruption
    with pytest.raises(ScheduleError):
        Schedule.from_dict(data)
    text = json.dumps(data)  # and through JSON (NaN/Infinity literals included)
    with pytest.raises(ScheduleError):
        Schedule.from_json(text)


# ----------------------------------------------------------------------------------------------------------------
# Model fingerprint
# ----------------------------------------------------------------------------------------------------------------


def test_fingerprint_mismatch_raises_naming_both_values(tmp_path):
    path = Schedule.uniform(MODEL, ddim(10), 0.5).save(tmp_path / "s.json")
    ours, theirs = config_sha256(MODEL.config), config_sha256(OTHER_MODEL.config)
    assert ours != theirs
    with pytest.raises(ScheduleError, match=rf"s.json: .*config_sha256: schedule has {ours}, model has {theirs}"):
        Schedule.load(path, OTHER_MODEL)
    with pytest.raises(ScheduleError, match=rf"schedule has {ours}, model has {theirs}"):
        Schedule.load(path).check_model(OTHER_MODEL)


def test_fingerprint_override_warns_and_loads(tmp_path):
    schedule = Schedule.uniform(MODEL, ddim(10), 0.5)
    path = schedule.save(tmp_path / "s.json")
    with pytest.warns(FingerprintMismatchWarning, match=r"config_sha256: schedule has [0-9a-f]{64}, model has"):
        assert Schedule.load(path, OTHER_MODEL, allow_fingerprint_mismatch=True) == schedule
    with pytest.warns(FingerprintMismatchWarning):
        schedule.check_model(OTHER_MODEL, allow_fingerprint_mismatch=True)


def test_matching_model_passes_silently(recwarn):
    Schedule.uniform(MODEL, ddim(10), 0.5).check_model(MODEL)
    assert len(recwarn) == 0


def test_width_missing_from_model_is_an_error_even_when_overridden():
    small = types.SimpleNamespace(config={**MODEL.config, "width_choices": [0.5, 1.0]})
    schedule = Schedule.from_widths(MODEL, ddim(5), [1.0, 0.25, 0.5, 0, 1.0])
    with pytest.raises(ScheduleError, match=r"widths use \[0.25\], which are not in the model's width_choices "
                                            r"\[0.5, 1.0\]"):
        schedule.check_model(small, allow_fingerprint_mismatch=True)


def test_width_choices_mismatch_is_named():
    wider = types.SimpleNamespace(config={**MODEL.config, "width_choices": [0.125, 0.25, 0.5, 0.75, 1.0]})
    schedule = Schedule.uniform(MODEL, ddim(5), 1.0)
    with pytest.raises(ScheduleError, match=r"model.width_choices: schedule has \[0.25, 0.5, 0.75, 1.0\], model has "
                                            r"\[0.125, 0.25, 0.5, 0.75, 1.0\]"):
        schedule.check_model(wider)


def test_model_without_width_choices_is_refused():
    with pytest.raises(ScheduleError, match=r"model.config has no 'width_choices'"):
        Schedule.uniform(types.SimpleNamespace(config={"sample_size": 16}), ddim(5), 1.0)


# ----------------------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------------------


def test_uniform_records_the_scheduler():
    scheduler = ddim(50)
    schedule = Schedule.uniform(MODEL, scheduler, 0.75)
    assert schedule.widths == (0.75,) * 50
    assert schedule.timesteps == tuple(DDIM50)
    assert schedule.scheduler_class_name == "DDIMScheduler" and schedule.num_inference_steps == 50
    assert schedule.scheduler_config["num_train_timesteps"] == 1000
    assert schedule.config_sha256 == config_sha256(MODEL.config)
    schedule.check_scheduler(scheduler)


def test_builders_call_set_timesteps_when_given_a_step_count():
    scheduler = DDIMScheduler()
    schedule = Schedule.uniform(MODEL, scheduler, 1.0, num_inference_steps=10)
    assert schedule.timesteps == tuple(DDIM10) and scheduler.timesteps.tolist() == DDIM10


def test_builders_refuse_a_scheduler_without_timesteps():
    with pytest.raises(ScheduleError, match=r"DDIMScheduler.set_timesteps\(n\) has not been called"):
        Schedule.uniform(MODEL, DDIMScheduler(), 1.0)


@pytest.mark.parametrize("fraction,n_small", [(0.4, 20), (0.25, 13), (0.0, 0), (1.0, 50), (0.29, 15), (0.01, 1)])
def test_ramp_uses_the_small_width_on_the_first_noisy_steps(fraction, n_small):
    schedule = Schedule.ramp(MODEL, ddim(50), small_width=0.25, large_width=1.0, fraction_small=fraction)
    assert schedule.widths == (0.25,) * n_small + (1.0,) * (50 - n_small)
    assert schedule.provenance["builder"]["num_small_steps"] == n_small


def test_ramp_small_steps_are_the_high_t_ones():
    schedule = Schedule.ramp(MODEL, ddim(10), 0.5, 1.0, 0.3)
    assert [(t, w) for t, w in zip(schedule.timesteps, schedule.widths) if w == 0.5] == [(900, 0.5), (800, 0.5),
                                                                                         (700, 0.5)]


@pytest.mark.parametrize("kwargs,match", [
    ({"small_width": 0.3}, r"small_width = 0.3 is not in the model's width_choices"),
    ({"large_width": 0}, r"large_width = 0 is not in the model's width_choices"),
    ({"fraction_small": 1.5}, r"fraction_small = 1.5 must be a number in \[0, 1\]"),
    ({"fraction_small": math.nan}, r"fraction_small = nan must be a number"),
])
def test_ramp_rejects_bad_arguments(kwargs, match):
    args = {"small_width": 0.5, "large_width": 1.0, "fraction_small": 0.5, **kwargs}
    with pytest.raises(ScheduleError, match=match):
        Schedule.ramp(MODEL, ddim(10), **args)


def test_from_widths_checks_length_and_values():
    assert Schedule.from_widths(MODEL, ddim(5), [1.0, 0, 0, 0.25, 0.5]).widths == (1.0, 0, 0, 0.25, 0.5)
    with pytest.raises(ScheduleError, match=r"len\(widths\) = 4 != number of DDIMScheduler timesteps = 5"):
        Schedule.from_widths(MODEL, ddim(5), [1.0] * 4)
    with pytest.raises(ScheduleError, match=r"widths\[0\] = 0 is a skip at step 0 \(timestep 800\)"):
        Schedule.from_widths(MODEL, ddim(5), [0, 1.0, 1.0, 1.0, 1.0])


def test_uniform_rejects_a_width_not_in_the_model():
    with pytest.raises(ScheduleError, match=r"width = 0.3 is not in the model's width_choices"):
        Schedule.uniform(MODEL, ddim(5), 0.3)


# ----------------------------------------------------------------------------------------------------------------
# Remapping by nearest timestep
# ----------------------------------------------------------------------------------------------------------------

# 50 DDIM steps; a distinct pattern so that a wrong index shows: width by position i.
PATTERN50 = [[0.25, 0.5, 0.75, 1.0][(i * 7) % 4] for i in range(50)]


def test_remap_50_to_10_takes_the_exact_timesteps():
    schedule = Schedule.from_widths(MODEL, ddim(50), PATTERN50)
    remapped = schedule.remap(scheduler=ddim(10))
    # DDIM10 timestep 900 - 100 k is DDIM50 step 4 + 5 k.
    assert remapped.widths == tuple(PATTERN50[4 + 5 * k] for k in range(10))
    assert remapped.timesteps == tuple(DDIM10)
    assert remapped.num_inference_steps == 10 and remapped.scheduler_class_name == "DDIMScheduler"


def test_remap_50_to_1000_and_back():
    schedule = Schedule.from_widths(MODEL, ddim(50), PATTERN50)
    ddpm = DDPMScheduler()
    ddpm.set_timesteps(1000)
    fine = schedule.remap(scheduler=ddpm)
    assert fine.timesteps == tuple(range(999, -1, -1)) and fine.scheduler_class_name == "DDPMScheduler"
    w = dict(zip(fine.timesteps, fine.widths))
    assert w[999] == PATTERN50[0]  # nearest is 980 (step 0), 19 away
    assert w[990] == PATTERN50[0]  # 980 is 10 away (there is no 1000)
    assert w[980] == PATTERN50[0]
    assert w[971] == PATTERN50[0]  # 980 is 9 away, 960 is 11
    assert w[970] == PATTERN50[1]  # tie between 980 and 960: the smaller t, 960 (step 1)
    assert w[969] == PATTERN50[1]
    assert w[10] == PATTERN50[49]  # tie between 20 and 0: 0
    assert w[11] == PATTERN50[48]
    back = fine.remap(scheduler=ddim(50))
    assert back.widths == tuple(PATTERN50) and back.timesteps == tuple(DDIM50)


def test_remap_tie_goes_to_the_smaller_timestep():
    schedule = Schedule(timesteps=[20, 10, 0], widths=[1.0, 0.5, 0.25], width_choices=CHOICES,
                        config_sha256=config_sha256(MODEL.config))
    assert schedule.remap([25, 15, 5]).widths == (1.0, 0.5, 0.25)
    assert schedule.remap([16, 14, 6, 4]).widths == (1.0, 0.5, 0.5, 0.25)
    assert schedule.remap([30, -3]).widths == (1.0, 0.25)


def test_remap_replaces_a_skip_at_the_new_first_step():
    schedule = Schedule(timesteps=[30, 20, 10, 0], widths=[1.0, 0, 0.5, 0.25], width_choices=CHOICES,
                        config_sha256=config_sha256(MODEL.config))
    # New step 0 (t=20) lands on the skip: the nearest non-skip timesteps are 30 and 10 (both 10 away): 10 wins.
    assert schedule.remap([20, 0]).widths == (0.5, 0.25)
    assert schedule.remap([22, 0]).widths == (1.0, 0.25)  # 30 is 8 away, 10 is 12
    # Skips after step 0 are kept.
    assert schedule.remap([30, 21, 19, 0]).widths == (1.0, 0.0, 0.0, 0.25)


def test_remap_onto_euler_float_timesteps_and_untied():
    schedule = Schedule.ramp(MODEL, ddim(10), 0.5, 1.0, 0.4)  # 900..600 at 0.5, 500..0 at 1.0
    euler = EulerDiscreteScheduler()
    euler.set_timesteps(7)
    ts = [999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0]
    assert euler.timesteps.tolist() == ts
    remapped = schedule.with_macs({0.25: 1, 0.5: 2, 0.75: 3, 1.0: 4}).with_metrics({"fid": 1.0}).remap(scheduler=euler)
    assert remapped.widths == (0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0)
    assert remapped.macs is None and remapped.metrics is None
    assert remapped.provenance["remapped_from"]["num_steps"] == 10
    untied = schedule.remap(ts)
    assert not untied.is_tied and untied.widths == remapped.widths
    assert json.loads(untied.to_json())["scheduler"] is None
    assert Schedule.from_json(untied.to_json()) == untied


def test_remap_argument_errors():
    schedule = Schedule.uniform(MODEL, ddim(10), 1.0)
    with pytest.raises(ScheduleError, match=r"remap needs timesteps or a scheduler"):
        schedule.remap()
    with pytest.raises(ScheduleError, match=r"differ from DDIMScheduler.timesteps"):
        schedule.remap([5, 4, 3], scheduler=ddim(5))


def test_check_scheduler_names_both_step_counts():
    schedule = Schedule.uniform(MODEL, ddim(10), 1.0)
    with pytest.raises(ScheduleError, match=r"schedule has 10 steps \[900 ... 0\], DDIMScheduler has 50 steps "
                                            r"\[980 ... 0\]"):
        schedule.check_scheduler(ddim(50))


# ----------------------------------------------------------------------------------------------------------------
# DDSM official schedules
# ----------------------------------------------------------------------------------------------------------------


def cifar10_like_widths():
    """As DDSM's CIFAR-10 result: full width at the low-noise end, 0.75 in the middle, 0.5 at the noisy start."""
    return [1 if t < 266 else 0.75 if t < 600 else 0.5 for t in range(1000)]


def official_text(widths):
    return "[" + ", ".join(str(w) for w in widths) + "]"  # as DDSM writes it: str(list), ints stay ints


def test_official_schedule_imports_onto_50_ddim_steps(tmp_path):
    path = tmp_path / "search.txt"
    path.write_text(official_text(cifar10_like_widths()))
    assert path.read_text().startswith("[1, 1, 1,") and path.read_text().endswith("0.5, 0.5]")
    schedule = Schedule.import_ddsm_official(path, MODEL, ddim(50))
    # DDIM50 visits 980..600 (20 steps, >= 600), 580..280 (16 steps), 260..0 (14 steps).
    assert schedule.widths == (0.5,) * 20 + (0.75,) * 16 + (1.0,) * 14
    assert schedule.timesteps == tuple(DDIM50)
    assert schedule.provenance["builder"]["source"] == str(path)
    assert Schedule.import_ddsm_official(str(path), MODEL, ddim(50)) == schedule  # a str path works too


def test_official_schedule_on_all_1000_steps_is_the_list_reversed():
    ddpm = DDPMScheduler()
    ddpm.set_timesteps(1000)
    schedule = Schedule.import_ddsm_official(official_text(cifar10_like_widths()), MODEL, ddpm)
    assert schedule.widths == tuple(float(w) for w in reversed(cifar10_like_widths()))


def test_official_schedule_on_euler_uses_the_nearest_integer_timestep():
    euler = EulerDiscreteScheduler()
    widths = [0.25 if t % 2 else 1.0 for t in range(1000)]  # odd t -> 0.25, even t -> 1.0
    schedule = Schedule.import_ddsm_official(official_text(widths), MODEL, euler, num_inference_steps=7)
    # Timesteps 999.0, 832.5, 666.0, 499.5, 333.0, 166.5, 0.0: halves go down (832, 499, 166).
    assert schedule.widths == (0.25, 1.0, 1.0, 0.25, 0.25, 1.0, 1.0)


@pytest.mark.parametrize("fmt", [
    lambda ws: official_text(ws),
    lambda ws: "[\n" + ",\n".join(str(w) for w in ws) + ",\n]\n",  # newlines and a trailing comma
    lambda ws: "  [" + ",".join(str(float(w)) for w in ws) + ",]  ",
    lambda ws: json.dumps(ws),
])
def test_official_text_variants_parse(fmt):
    assert parse_ddsm_official(fmt(cifar10_like_widths())) == tuple(float(w) for w in cifar10_like_widths())


@pytest.mark.parametrize("text,match", [
    (official_text([1] * 999), r"expected 1000 widths \(one per DDPM timestep\), got 999"),
    (official_text([1] * 500 + [0.6] + [1] * 499), r"DDSM schedule\[t=500\] = 0.6 is not in the model's width"),
    (official_text([1] * 10 + ["'x'"] + [1] * 989), r"DDSM schedule\[t=10\] = 'x' must be a number, got str"),
    (official_text([1] * 10 + ["True"] + [1] * 989), r"DDSM schedule\[t=10\] = True must be a number, got bool"),
    (official_text([1] * 1000) + official_text([1] * 1000), r"not one list literal.*keep only one list"),
    ("{'a': 1}", r"must be a list of widths, got dict"),
])
def test_bad_official_schedules_are_rejected(tmp_path, text, match):
    path = tmp_path / "search.txt"
    path.write_text(text)
    with pytest.raises(ScheduleError, match="search.txt: .*" + match):
        Schedule.import_ddsm_official(path, MODEL, ddim(50))
    if text.startswith("["):  # given as text rather than a path
        with pytest.raises(ScheduleError, match="<text>: .*" + match):
            Schedule.import_ddsm_official(text, MODEL, ddim(50))


def test_official_file_with_code_is_rejected_without_running_it(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "search.txt"
    path.write_text(f"__import__('os').makedirs({str(sentinel)!r}) or [1.0] * 1000")
    with pytest.raises(ScheduleError, match=r"search.txt: DDSM schedule text is not one list literal"):
        Schedule.import_ddsm_official(path, MODEL, ddim(50))
    assert not sentinel.exists()
    inline = f"[__import__('os').makedirs({str(sentinel)!r})] + [1.0] * 999"
    with pytest.raises(ScheduleError, match=r"<text>: DDSM schedule text is not one list literal"):
        Schedule.import_ddsm_official(inline, MODEL, ddim(50))
    assert not sentinel.exists()


def test_official_import_needs_1000_train_timesteps():
    scheduler = DDIMScheduler(num_train_timesteps=500)
    scheduler.set_timesteps(10)
    with pytest.raises(ScheduleError, match=r"num_train_timesteps = 500 but the DDSM schedule has 1000 entries"):
        Schedule.import_ddsm_official(official_text(cifar10_like_widths()), MODEL, scheduler)


# ----------------------------------------------------------------------------------------------------------------
# MACs, metrics, provenance, summary
# ----------------------------------------------------------------------------------------------------------------

TABLE = {0.25: 384, 0.5: 1524, 0.75: 3420, 1.0: 6071}  # DDSM's CIFAR-10 UNet, MMACs (fvcore, no attention)


def test_with_macs_sums_with_skips():
    schedule = Schedule.from_widths(MODEL, ddim(5), [1.0, 0, 0.5, 0.5, 0.25]).with_macs(TABLE)
    assert schedule.macs["per_step"] == (6071, 0, 1524, 1524, 384)
    assert schedule.macs["total"] == 9503
    assert schedule.macs["full"] == 30355
    assert schedule.macs["ratio"] == pytest.approx(9503 / 30355)


def test_with_macs_accepts_json_keys_and_needs_every_used_width():
    schedule = Schedule.from_widths(MODEL, ddim(5), [1.0, 0, 0.5, 0.5, 0.25])
    as_json = {str(k): v for k, v in TABLE.items()}
    assert schedule.with_macs(as_json) == schedule.with_macs(TABLE)
    with pytest.raises(ScheduleError, match=r"MACs table has no entry for width\(s\) \[0.25\]"):
        schedule.with_macs({0.5: 1524, 0.75: 3420, 1.0: 6071})
    with pytest.raises(ScheduleError, match=r"MACs table\[0.5\] = nan is not finite"):
        schedule.with_macs({**TABLE, 0.5: math.nan})


def test_with_metrics_and_provenance_merge_and_copy():
    schedule = Schedule.uniform(MODEL, ddim(5), 1.0)
    scored = schedule.with_metrics({"fid": 3.5}).with_metrics({"num_samples": 100})
    assert dict(scored.metrics) == {"fid": 3.5, "num_samples": 100}
    assert schedule.metrics is None  # the original is unchanged
    tagged = schedule.with_provenance({"search": {"budget": 0.5, "seed": 0, "generations": 10}})
    assert tagged.provenance["search"]["budget"] == 0.5 and tagged.provenance["builder"]["name"] == "uniform"
    with pytest.raises(ScheduleError, match=r"metrics.fid = nan is not finite"):
        schedule.with_metrics({"fid": math.nan})


def test_summary_counts_widths_and_ratio():
    schedule = Schedule.from_widths(MODEL, ddim(5), [1.0, 0, 0.5, 0.5, 0.25]).with_macs(TABLE)
    text = schedule.summary()
    assert "5 steps (DDIMScheduler)" in text
    assert "widths 1.0 x1, 0.5 x2, 0.25 x1, skip x1" in text
    assert "MACs 31.3% of full" in text
    assert str(schedule).startswith("Schedule: 5 steps")
    assert "fid 3.5" in schedule.with_metrics({"fid": 3.5}).summary()
