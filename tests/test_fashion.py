"""configs/fashion.yaml (Fashion-MNIST at its native 28 px), its small dense companion, and `make fashion-data`:
the configs load and agree, the model runs every width at 28 px, the real data load at the configured size, a
reduced model from the config trains on them, the domain feature network is named for them. The tests that need
the data skip, saying how to get it, when Debian's dataset-fashion-mnist is not installed."""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ddsm.config import ExperimentConfig, load_config
from ddsm.data import FASHION_MNIST_DEFAULT_ROOT, dataset_from_config
from ddsm.evaluation.metrics import DomainFeatures, domain_features_name, train_domain_classifier
from ddsm.training import RunDirectory, SlimmableTrainer

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT / "configs" / "fashion.yaml"
SMALL_DENSE = ROOT / "configs" / "fashion_small_dense.yaml"
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
HAVE_DATA = all((FASHION_MNIST_DEFAULT_ROOT / f"{f}.gz").is_file() or (FASHION_MNIST_DEFAULT_ROOT / f).is_file()
                for f in IDX_FILES)
needs_data = pytest.mark.skipif(
    not HAVE_DATA, reason=f"Fashion-MNIST is not in {FASHION_MNIST_DEFAULT_ROOT}: `make fashion-data` "
    "(apt-get install dataset-fashion-mnist) installs it")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")

pytestmark = pytest.mark.usefixtures("one_thread")


def _data_section(cfg: ExperimentConfig) -> dict:
    return {k: v for k, v in dataclasses.asdict(cfg.data).items() if v is not None}


# ----------------------------------------------------------------------------------------------------------------
# The configs
# ----------------------------------------------------------------------------------------------------------------


def test_fashion_config_loads_and_fits_its_data_and_recipe():
    cfg = load_config(FASHION)
    m = cfg.model
    assert cfg.name == "fashion" and cfg.data.name == "fashion-mnist" and cfg.data.split == "train"
    assert m["sample_size"] == cfg.data.image_size == 28  # native size: nothing cropped or resampled
    assert m["sample_size"] % 2 ** (len(m["block_out_channels"]) - 1) == 0
    assert m["in_channels"] == m["out_channels"] == 1 and m["num_classes"] == 10
    assert m["width_choices"] == [0.25, 0.5, 0.75, 1.0]
    assert cfg.train.sandwich_widths == 3 and 0 < cfg.train.full_width_steps < cfg.train.max_steps
    mnist = load_config(ROOT / "configs" / "mnist.yaml")  # the demo's sampling and search recipe ...
    assert cfg.sampling == mnist.sampling
    same = ("budget", "metric", "allow_skip", "segments", "top_k", "halving_eta")
    assert {k: getattr(cfg.search, k) for k in same} == {k: getattr(mnist.search, k) for k in same}
    assert cfg.search.metric == "teacher_fid" and cfg.search.halving_eta > 1  # the score the proxy check trusts
    # ... with at least as many samples per candidate and generations (this data set varies more)
    for k in ("num_samples", "final_samples", "population", "generations"):
        assert getattr(cfg.search, k) >= getattr(mnist.search, k), k


def test_fashion_model_runs_every_width_at_28px():
    model = load_config(FASHION).build_model().eval()
    torch.manual_seed(0)
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor([999, 1]), torch.tensor([0, 9])
    with torch.no_grad():
        for w in model.width_choices:
            out = model(x, t, class_labels=y, width=w).sample
            assert out.shape == (2, 1, 28, 28) and torch.isfinite(out).all(), w


def test_small_dense_config_is_the_supernets_narrowest_width():
    cfg, small = load_config(FASHION), load_config(SMALL_DENSE)
    assert small.data == cfg.data and small.diffusion == cfg.diffusion and small.sampling == cfg.sampling
    assert small.model["width_choices"] == [1.0] and small.train.sandwich_widths == 1
    same = ("sample_size", "in_channels", "out_channels", "layers_per_block", "attention_resolutions",
            "mid_block_attention", "attention_head_dim", "num_classes")
    assert {k: small.model[k] for k in same} == {k: cfg.model[k] for k in same}
    w, div = min(cfg.model["width_choices"]), cfg.model["channel_divisor"]
    full, narrow = cfg.model["block_out_channels"], small.model["block_out_channels"]
    assert narrow == [max(div, round(w * c / div) * div) for c in full]
    # the same channels per GroupNorm group in every level as the supernet keeps at that width
    assert [c / small.model["norm_num_groups"] for c in narrow] == [c / cfg.model["norm_num_groups"] for c in full]
    dense = small.build_model()
    assert dense.width_choices == (1.0,)


# ----------------------------------------------------------------------------------------------------------------
# The data, one training step, the domain feature network
# ----------------------------------------------------------------------------------------------------------------


@needs_data
def test_fashion_data_load_at_the_configured_size():
    cfg = load_config(FASHION)
    train = dataset_from_config(_data_section(cfg))
    test = dataset_from_config(dict(_data_section(cfg), split="test"))
    for ds, n in ((train, 60000), (test, 10000)):
        assert len(ds) == n and ds.num_classes == 10 and ds.images.shape == (n, 1, 28, 28)
        assert ds.images.dtype == torch.float32 and -1 <= float(ds.images.min()) < float(ds.images.max()) <= 1
        assert torch.equal(torch.bincount(ds.labels), torch.full((10,), n // 10))  # labels 0..9, balanced
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"


@needs_data
def test_a_reduced_fashion_model_trains_on_real_images(tmp_path):
    raw = yaml.safe_load(FASHION.read_text())
    raw["model"].update(block_out_channels=[16, 32, 32], norm_num_groups=4, attention_head_dim=8, channel_divisor=4)
    raw["train"].update(batch_size=8, max_steps=2, full_width_steps=1, warmup_steps=1, checkpoint_every=100,
                        sample_images=0, log_every=1)
    cfg = ExperimentConfig.from_dict(raw)
    trainer = SlimmableTrainer(cfg, tmp_path / "run", progress=False)  # the config's data: real Fashion-MNIST
    assert trainer.dataset.name == "fashion-mnist" and tuple(trainer.dataset[0][0].shape) == (1, 28, 28)
    result = trainer.train()
    assert result.step == 2 and (tmp_path / "run" / "model" / "config.json").is_file()
    log = RunDirectory(tmp_path / "run").read_log()
    losses = [{k: v for k, v in r.items() if k.startswith("loss/")} for r in log]
    assert list(losses[0]) == ["loss/1.0"] and len(losses[1]) == 3  # the dense warm-up, then the sandwich
    assert all(torch.isfinite(torch.tensor(v)) for r in losses for v in r.values())


def test_domain_feature_network_is_named_for_fashion_mnist():
    cfg = load_config(FASHION)
    name = domain_features_name(cfg.data.name, cfg.data.image_size)
    assert name == "fashion-mnist-28px-cnn-v1"
    assert domain_features_name(cfg.data.name, 28, "0123456789abcdef") == "fashion-mnist-28px-cnn-v1-01234567"


@needs_data
def test_domain_feature_network_trains_on_fashion_mnist():
    cfg = load_config(FASHION)
    train = dataset_from_config(_data_section(cfg)).subset(range(300), "train")
    test = dataset_from_config(dict(_data_section(cfg), split="test")).subset(range(100), "test")
    model, accuracy = train_domain_classifier(train, test, epochs=1, progress=False)
    assert 0.0 <= accuracy <= 1.0 and model.config.input_size == 28 and model.config.num_classes == 10
    features = DomainFeatures(model, domain_features_name("fashion-mnist", 28), accuracy)
    assert features(test.images[:4]).shape == (4, 128)


# ----------------------------------------------------------------------------------------------------------------
# make fashion-data, make fashion
# ----------------------------------------------------------------------------------------------------------------


def _make(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def _fake_apt(tmp_path: Path, body: str) -> Path:
    """An apt-get stand-in: logs its arguments to calls.txt, then runs ``body``."""
    script = tmp_path / "fake-apt"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'calls.txt'}\n{body}\n")
    script.chmod(0o755)
    return script


@needs_make
@needs_data
def test_make_fashion_data_finds_installed_files():
    done = _make("fashion-data")
    assert done.returncode == 0, done.stderr
    assert f"found in {FASHION_MNIST_DEFAULT_ROOT}" in done.stdout


@needs_make
def test_make_fashion_data_fails_clearly_when_it_cannot_install(tmp_path):
    fake = _fake_apt(tmp_path, "exit 100")
    done = _make("fashion-data", f"FASHION_DATA={tmp_path / 'none'}", f"APT_GET={fake}")
    assert done.returncode != 0
    assert "dataset-fashion-mnist" in done.stderr and "data.root" in done.stderr
    no_apt = _make("fashion-data", f"FASHION_DATA={tmp_path / 'none'}", f"APT_GET={tmp_path / 'no-such-apt'}")
    assert no_apt.returncode != 0 and "there is no" in no_apt.stderr and "data.root" in no_apt.stderr


@needs_make
@pytest.mark.skipif(os.geteuid() != 0, reason="installing runs apt-get directly only as root")
def test_make_fashion_data_installs_the_package_when_files_are_missing(tmp_path):
    data = tmp_path / "data"
    writes = " && ".join(f"touch {data / f}.gz" for f in IDX_FILES)
    fake = _fake_apt(tmp_path, f'[ "$1" = install ] && mkdir -p {data} && {writes}')
    done = _make("fashion-data", f"FASHION_DATA={data}", f"APT_GET={fake}")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "calls.txt").read_text().splitlines() == ["install -y dataset-fashion-mnist"]
    assert f"installed in {data}" in done.stdout


@needs_make
def test_make_fashion_runs_train_search_frontier_on_the_fashion_config(tmp_path):
    plan = _make("-n", "fashion", f"FASHION_DIR={tmp_path}", f"PY={sys.executable}")
    assert plan.returncode == 0, plan.stderr
    text = " ".join(plan.stdout.replace("\\\n", " ").split())
    order = [text.index(s) for s in ("fashion-mnist", "train/train_slimmable.py --config configs/fashion.yaml",
                                     "search/evolve.py", "eval/frontier.py")]
    assert order == sorted(order)
    assert f"--output-dir {tmp_path}/train --resume" in text
    assert "--steps 10 25 50 --budgets 0.25 0.35 0.5 0.7" in text and f"{tmp_path}/frontier" in text
    assert "--num-samples 1000 --inception-samples 1000" in text
