"""ddsm.config: the shipped configs load, every kind of bad value is refused with a message that names the section,
the key, the value and what is expected, and the CLIs say so in one line (and never guess a missing config)."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional, Tuple

import pytest
import yaml

from conftest import tiny_unet_kwargs
from ddsm.config import ConfigError, DiffusionConfig, ExperimentConfig, SearchConfig, TrainConfig, load_config
from ddsm.config.check import describe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SECTIONS = ("model", "data", "diffusion", "train", "sampling", "search", "vae")


def _script(path):
    """Import a CLI script as a module, to call its main(argv) in-process."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem + "_cli", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, section: Optional[str], key: str, yaml_text: str) -> Path:
    """configs/mnist.yaml with ``section.key`` (or a top-level ``key``) set to ``yaml_text`` written verbatim, so
    YAML reads it as a user's file would (``1e-4`` stays a string to PyYAML)."""
    raw = yaml.safe_load((ROOT / "configs/mnist.yaml").read_text())
    (raw.setdefault(section, {}) if section else raw)[key] = "@VALUE@"
    path.write_text(yaml.safe_dump(raw, sort_keys=False).replace("'@VALUE@'", yaml_text))
    return path


# ------------------------------------------------------------------------------------------------- the shipped files


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_load_and_round_trip(path, tmp_path):
    cfg = load_config(path)
    assert cfg.name == path.stem and cfg.model["sample_size"] > 0
    assert load_config(cfg.save(tmp_path / "resolved.yaml")) == cfg


# ------------------------------------------------------------------------------------------------ accepted numbers


@pytest.mark.parametrize("section, key, text, want", [
    ("diffusion", "beta_start", "1e-4", 1e-4),
    ("diffusion", "beta_start", "1E-4", 1e-4),
    ("train", "learning_rate", "3.0e-5", 3e-5),
    ("vae", "kl_weight", "1e-6", 1e-6),
    ("diffusion", "num_train_timesteps", "1e3", 1000),
    ("train", "max_steps", "1000.0", 1000),
    ("search", "budget", "1", 1.0),
    ("model", "norm_eps", "1e-5", 1e-5),
])
def test_numbers_yaml_reads_as_strings_are_numbers(tmp_path, section, key, text, want):
    path = _write(tmp_path / "c.yaml", section, key, text)
    cfg = load_config(path)
    got = cfg.model[key] if section == "model" else getattr(getattr(cfg, section), key)
    assert got == want and type(got) is type(want)


def test_yaml_lists_become_tuples_in_sections_and_stay_lists_in_the_model_section():
    cfg = load_config(ROOT / "configs/mnist_latent.yaml")
    assert cfg.vae.block_out_channels == (32, 64)
    assert cfg.model["block_out_channels"] == [32, 64, 64]


# ---------------------------------------------------------------------------------------------------- bad values

METRICS = "domain_fid, domain_kid, inception_fid, fidelity, teacher_fid"


@pytest.mark.parametrize("section, key, text, message", [
    ("diffusion", "beta_start", "abc", "[diffusion] beta_start='abc': expected a number"),
    ("diffusion", "beta_end", "[0.02]", "[diffusion] beta_end=[0.02]: expected a number"),
    ("train", "batch_size", "[1, 2]", "[train] batch_size=[1, 2]: expected an int"),
    ("diffusion", "num_train_timesteps", "1.5", "[diffusion] num_train_timesteps=1.5: expected an int"),
    ("train", "max_steps", "1e-3", "[train] max_steps='1e-3': expected an int"),
    ("search", "budget", "half", "[search] budget='half': expected a number"),
    ("search", "budget", "1.5", "[search] budget=1.5: expected a number in (0, 1]"),
    ("search", "budget", "0", "[search] budget=0: expected a number in (0, 1]"),
    ("search", "metric", "fid", f"[search] metric='fid': expected one of {METRICS}"),
    ("search", "mode", "random", "[search] mode='random': expected one of single, nsga2"),
    ("sampling", "scheduler", "Foo", "[sampling] scheduler='Foo': expected one of DDPMScheduler, DDIMScheduler"),
    ("data", "name", "mnist", "[data] name='mnist': expected one of mnist-5k, fashion-mnist"),
    ("data", "split", "val", "[data] split='val': expected one of train, test"),
    ("data", "channels", "2", "[data] channels=2: expected one of 1, 3"),
    ("diffusion", "beta_schedule", "cosine", "[diffusion] beta_schedule='cosine': expected one of linear"),
    ("diffusion", "prediction_type", "x0", "[diffusion] prediction_type='x0': expected one of epsilon"),
    ("search", "allow_skip", "1", "[search] allow_skip=1: expected true or false"),
    ("train", "distill_only", "'true'", "[train] distill_only='true': expected true or false"),
    ("train", "max_steps", "-5", "[train] max_steps=-5: expected an int > 0"),
    ("sampling", "num_inference_steps", "0", "[sampling] num_inference_steps=0: expected an int > 0"),
    ("train", "warmup_steps", "-1", "[train] warmup_steps=-1: expected an int >= 0"),
    ("train", "ema_decay", "1.0", "[train] ema_decay=1.0: expected a number in [0, 1)"),
    ("search", "crossover_prob", "1.2", "[search] crossover_prob=1.2: expected a number in [0, 1]"),
    ("search", "segments", "0", "[search] segments=0: expected an int > 0"),
    ("vae", "block_out_channels", "[32, -64]", "[vae] block_out_channels=[32, -64]: expected a list of ints > 0"),
    ("model", "dropout", "abc", "[model] dropout='abc': expected a number"),
    ("model", "mid_block_attention", "1", "[model] mid_block_attention=1: expected true or false"),
    ("model", "block_out_channels", "[32, x]", "[model] block_out_channels=[32, 'x']: expected a list of ints"),
    ("model", "num_classes", "ten", "[model] num_classes='ten': expected an int or null"),
    (None, "name", "3", "name=3: expected a string"),
    (None, "data", "[1]", "data=[1]: expected a mapping"),
])
def test_bad_values_name_section_key_value_and_expectation(tmp_path, section, key, text, message):
    path = _write(tmp_path / "bad.yaml", section, key, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize("section", SECTIONS)
def test_unknown_key_in_each_section(tmp_path, section):
    path = _write(tmp_path / "bad.yaml", section, "bogus", "1")
    with pytest.raises(ConfigError, match=rf"\[{section}\] unknown key\(s\) \['bogus'\]; expected some of"):
        load_config(path)


def test_unknown_section_and_missing_model(tmp_path):
    path = _write(tmp_path / "bad.yaml", None, "serach", "{budget: 0.5}")
    with pytest.raises(ConfigError, match=r"unknown section\(s\) \['serach'\]"):
        load_config(path)
    path.write_text("search: {budget: 0.5}\n")
    with pytest.raises(ConfigError, match="needs a 'model' section"):
        load_config(path)


def test_cross_field_checks():
    with pytest.raises(ConfigError, match=r"\[diffusion\] beta_start=0.03 >= beta_end=0.02"):
        DiffusionConfig(beta_start=0.03)
    with pytest.raises(ConfigError, match=r"\[train\] distill_only=True with distill_weight=0.0"):
        TrainConfig(distill_only=True)
    with pytest.raises(ConfigError, match=r"\[vae\] norm_num_groups=3: expected a divisor"):
        ExperimentConfig.from_dict({"model": tiny_unet_kwargs(), "vae": {"norm_num_groups": 3}})


def test_sections_made_in_code_are_checked_too():
    assert SearchConfig(budget="0.25").budget == 0.25
    with pytest.raises(ConfigError, match=r"\[search\] metric='lpips'"):
        SearchConfig(metric="lpips")
    with pytest.raises(ConfigError, match=r"\[train\] max_steps=0: expected an int > 0"):
        dataclasses.replace(TrainConfig(), max_steps=0)
    cfg = ExperimentConfig(model=tiny_unet_kwargs(), search={"mode": "nsga2"})
    assert cfg.search == SearchConfig(mode="nsga2") and cfg.model["block_out_channels"] == [16, 32, 32]


@pytest.mark.parametrize("annotation, words", [
    (int, "an int"), (float, "a number"), (bool, "true or false"), (Optional[int], "an int or null"),
    (Tuple[float, ...], "a list of numbers"), (Optional[Tuple[int, ...]], "a list of ints or null"), (Any, "anything"),
])
def test_describe_annotations(annotation, words):
    assert describe(annotation) == words


# ------------------------------------------------------------------------------------------------------- the CLIs


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from ddsm.models import SlimmableUNet

    path = tmp_path_factory.mktemp("run") / "model"
    SlimmableUNet(**tiny_unet_kwargs()).save_pretrained(path)
    return path


def test_cli_with_a_bad_config_prints_one_line_and_no_traceback(model_dir, tmp_path):
    bad = _write(tmp_path / "bad.yaml", "search", "metric", "fid")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "search/evolve.py", "--model", str(model_dir), "--config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"error: {bad}: [search] metric='fid': expected one of {METRICS}" in res.stderr


@pytest.mark.parametrize("script, extra", [
    ("search/evolve.py", []),
    ("eval/evaluate.py", ["--schedule", "schedule.json"]),
    ("eval/widths.py", []),
    ("eval/benchmark.py", []),
    ("eval/frontier.py", []),
    ("eval/proxy_check.py", []),
])
def test_clis_never_guess_a_missing_config(model_dir, capsys, script, extra):
    assert _script(script).main(["--model", str(model_dir), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.yaml" in err and "pass --config" in err, err


def test_run_config_comes_from_the_flag_or_beside_the_model(tmp_path):
    from ddsm.cli import load_run_config

    (tmp_path / "model").mkdir()
    with pytest.raises(ConfigError, match="pass --config"):
        load_run_config(tmp_path / "model")
    ExperimentConfig.from_dict({"model": tiny_unet_kwargs(), "name": "beside"}).save(tmp_path / "config.yaml")
    assert load_run_config(tmp_path / "model").name == "beside"
    assert load_run_config(tmp_path / "model", ROOT / "configs/mnist.yaml").name == "mnist"
