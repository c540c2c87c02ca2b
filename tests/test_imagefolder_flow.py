"""Own images end to end: an ImageFolder of class subfolders only (no split folders) and a CIFAR-10 batch folder go
through train -> search (the config's default metric, domain FID) -> evaluate -> benchmark, with the data's root
followed everywhere; the domain classifier's held-out images and the cache keys that keep data sets apart."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from conftest import load_script
from fake_data import write_fake_cifar10, write_image_folder
from ddsm.config import SearchConfig
from ddsm.data import held_out_split, load_dataset, load_with_held_out
from ddsm.evaluation import FeatureSpace
from ddsm.evaluation.metrics import DomainClassifierConfig, load_or_train_domain_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _config(path: Path, data: dict, num_classes: int) -> Path:
    """A tiny 16 px RGB class-conditional run; the search section keeps the default metric, with small sizes."""
    raw = {
        "name": "own-images",
        "model": dict(sample_size=16, in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1,
                      attention_resolutions=[8], attention_head_dim=4, norm_num_groups=4, num_classes=num_classes,
                      width_choices=[0.25, 0.5, 0.75, 1.0], channel_divisor=2),
        "data": data,
        "diffusion": {"num_train_timesteps": 100},
        "train": dict(batch_size=8, max_steps=3, warmup_steps=1, checkpoint_every=3, sample_every=100,
                      sample_images=0, sample_steps=3, log_every=1),
        "sampling": {"num_inference_steps": 6, "batch_size": 16},
        "search": dict(population=4, generations=1, num_samples=8, final_samples=8, top_k=2),
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def _run_all(tmp_path: Path, config: Path, capsys) -> dict:
    """The four CLIs in order; each must exit 0. Returns the schedule, report and benchmark JSONs."""
    run = tmp_path / "run"
    assert load_script("train/train_slimmable.py").main(["--config", str(config), "--output-dir", str(run),
                                                      "--no-progress"]) == 0, capsys.readouterr().err[-2000:]
    assert (run / "model" / "config.json").is_file() and (run / "config.yaml").is_file()
    schedule = run / "search" / "schedule.json"
    assert load_script("search/evolve.py").main(["--model", str(run / "model"), "--budget", "0.5"]) == 0, \
        capsys.readouterr().err[-2000:]
    for name in ("schedule.json", "pareto.json", "pareto.png", "schedule.png", "log.csv"):
        assert (schedule.parent / name).is_file(), name
    report = tmp_path / "report"
    assert load_script("eval/evaluate.py").main(["--model", str(run / "model"), "--schedule", str(schedule),
                                             "--num-samples", "8", "--no-inception", "--output-dir",
                                             str(report)]) == 0, capsys.readouterr().err[-2000:]
    assert {"report.json", "report.md", "grid.png"} <= {p.name for p in report.iterdir()}
    bench = tmp_path / "bench"
    assert load_script("eval/benchmark.py").main([
        "--model", str(run / "model"), "--schedule", str(schedule), "--budgets", "0.5", "--num-samples", "6",
        "--calibration-samples", "3", "--stepsaver-samples", "2", "--stepsaver-candidates", "2", "4",
        "--stepsaver-reference-steps", "8", "--no-inception", "--no-progress", "--output-dir", str(bench)]) == 0, \
        capsys.readouterr().err[-2000:]
    assert (bench / "benchmark.json").is_file() and (bench / "benchmark.md").is_file()
    return dict(schedule=json.loads(schedule.read_text()), report=json.loads((report / "report.json").read_text()),
                report_md=(report / "report.md").read_text(),
                bench=json.loads((bench / "benchmark.json").read_text()))


def _classifier_infos(cache: Path) -> list:
    return [json.loads(p.read_text()) for p in sorted((cache / "domain_classifiers").glob("*/info.json"))]


def test_image_folder_of_class_subfolders_end_to_end(tmp_path, monkeypatch, capsys):
    assert SearchConfig().metric == "domain_fid"  # what the search below uses: no --metric, none in the config
    cache = tmp_path / "cache"
    monkeypatch.setenv("DDSM_CACHE", str(cache))
    folder = write_image_folder(tmp_path / "shapes", per_class=40)
    config = _config(tmp_path / "own.yaml", {"name": "imagefolder", "root": str(folder)}, num_classes=3)
    out = _run_all(tmp_path, config, capsys)

    (info,) = _classifier_infos(cache)  # one classifier, trained by the search, reused by evaluate and benchmark
    name = info["name"]
    assert name.startswith("imagefolder-16px-cnn-v1-") and info["key"]["root"] == str(folder.resolve())
    assert info["key"]["channels"] == 3
    held = info["held_out"]
    assert held["kind"] == "held-out" and held["fraction"] == 0.1 and held["seed"] == 0
    assert (held["num_train"], held["num_held_out"]) == (108, 12) and info["num_test"] == 12
    assert len(held["held_out"]) == 12 and {f.split("/")[0] for f in held["held_out"]} == {"red", "green", "blue"}
    assert all((folder / f).is_file() for f in held["held_out"])
    assert 0.5 < info["test_accuracy"] <= 1.0  # distinct shapes and colours: far above chance (1/3)

    metrics = out["schedule"]["metrics"]
    assert metrics["metric"] == "domain_fid" and metrics["fid_features"] == name
    m = out["report"]["metrics"]
    assert m["domain_features"] == name and m["domain_reference_root"] == str(folder.resolve())
    assert m["domain_reference_samples"] == 120 and m["domain_classifier_accuracy"] == info["test_accuracy"]
    assert m["domain_classifier_held_out"] == {k: v for k, v in held.items() if k != "held_out"}
    assert "12 images (10% of each class held out, seed 0" in out["report_md"] and name in out["report_md"]
    assert out["bench"]["metrics"]["domain_features"] == name
    assert out["bench"]["metrics"]["domain_classifier_held_out"]["num_held_out"] == 12
    assert len(list((cache / "reference_stats").glob("imagefolder-train-16px-3ch-n120-*.npz"))) == 1

    widths = tmp_path / "widths.json"  # the other two CLIs that read real data follow the root too
    assert load_script("eval/widths.py").main(["--model", str(tmp_path / "run" / "model"), "--num-samples", "4",
                                              "--steps", "3", "--json", str(widths), "--no-progress"]) == 0
    assert json.loads(widths.read_text())["features"] == name
    capsys.readouterr()
    assert load_script("eval/real_fid.py").main(["--dataset", "imagefolder", "--root", str(folder), "--image-size",
                                                "16", "--num-samples", "200", "--no-inception"]) == 0
    real = json.loads(capsys.readouterr().out)
    assert real["domain_features"] == name and real["num_samples"] == [108, 12]  # the rest vs the held-out part
    assert real["test_images"]["kind"] == "held-out" and real["domain_classifier_accuracy"] == info["test_accuracy"]


def test_cifar10_batches_end_to_end(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    monkeypatch.setenv("DDSM_CACHE", str(cache))
    write_fake_cifar10(tmp_path / "cifar", per_batch=6)
    config = _config(tmp_path / "cifar.yaml", {"name": "cifar10", "root": str(tmp_path / "cifar"),
                                               "image_size": 16}, num_classes=10)
    out = _run_all(tmp_path, config, capsys)
    (info,) = _classifier_infos(cache)
    assert info["name"].startswith("cifar10-16px-cnn-v1-")
    assert info["key"]["root"] == str((tmp_path / "cifar").resolve())
    assert info["held_out"] == {"kind": "test-split", "source_split": "test", "num_train": 30, "num_held_out": 6}
    assert out["report"]["metrics"]["domain_features"] == info["name"] == out["schedule"]["metrics"]["fid_features"]
    assert out["report"]["metrics"]["domain_reference_samples"] == 30


# --------------------------------------------------------------------------------------------------------------------
# the held-out split


def test_held_out_split_is_stratified_fixed_and_recorded(tmp_path):
    folder = write_image_folder(tmp_path / "a", per_class=25, size=8)
    train, held, record = load_with_held_out("imagefolder", root=folder, image_size=8)
    assert (len(train), len(held)) == (66, 9) and held.split == "held-out"
    assert record["kind"] == "held-out" and (record["num_train"], record["num_held_out"]) == (66, 9)
    assert np.bincount(held.labels.numpy()).tolist() == [3, 3, 3]  # round(0.1 x 25) of each class
    assert set(held.files) == set(record["held_out"]) and not set(held.files) & set(train.files)
    torch.testing.assert_close(held[0][0], load_dataset("imagefolder", root=folder, image_size=8)[
        load_dataset("imagefolder", root=folder).files.index(held.files[0])][0])
    again = held_out_split(load_dataset("imagefolder", root=folder, image_size=8))[2]
    assert again == record  # deterministic
    other_seed = held_out_split(load_dataset("imagefolder", root=folder, image_size=8), seed=1)[2]
    assert other_seed["held_out"] != record["held_out"] and other_seed["seed"] == 1
    # Adding images changes at most the new images' own classes' choices, one each.
    write_image_folder(folder, classes=["red"], per_class=26, size=8)
    grown = held_out_split(load_dataset("imagefolder", root=folder, image_size=8))[2]
    assert len(set(grown["held_out"]) ^ set(record["held_out"])) <= 2
    with pytest.raises(ValueError, match=r"held-out fraction must be in \(0, 1\)"):
        held_out_split(train, fraction=1.0)


def test_a_folder_with_split_folders_keeps_its_test_split(tmp_path):
    write_image_folder(tmp_path / "train", per_class=5, size=8)
    write_image_folder(tmp_path / "test", per_class=2, size=8, offset=50)
    train, test, record = load_with_held_out("imagefolder", root=tmp_path)
    assert (len(train), len(test)) == (15, 6) and record["kind"] == "test-split"
    assert test.files[0] == "test/blue/000.png"


# --------------------------------------------------------------------------------------------------------------------
# cache keys: data sets and networks never share statistics


class _PooledPixels(torch.nn.Module):
    """Average-pooled pixels as features: a fixed network, so only the data can make statistics differ."""

    name = "pooled-pixels"

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(scale))

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1) * self.scale


def test_two_folders_of_the_same_name_and_size_do_not_share_statistics(tmp_path, monkeypatch):
    monkeypatch.setenv("DDSM_CACHE", str(tmp_path / "cache"))
    a = write_image_folder(tmp_path / "a", per_class=6, size=8)
    b = write_image_folder(tmp_path / "b", per_class=6, size=8, offset=100)
    ref_a = FeatureSpace(_PooledPixels(), "imagefolder", "train", 8, 3, root=str(a), progress=False).reference
    ref_b = FeatureSpace(_PooledPixels(), "imagefolder", "train", 8, 3, root=str(b), progress=False).reference
    assert ref_a.key["root"] == str(a.resolve()) and ref_b.key["root"] == str(b.resolve())
    assert not np.allclose(ref_a.mu, ref_b.mu)
    gray = FeatureSpace(_PooledPixels(), "imagefolder", "train", 8, 1, root=str(a), progress=False).reference
    assert gray.key["channels"] == 1 and gray.mu.shape != ref_a.mu.shape
    other_weights = FeatureSpace(_PooledPixels(2.0), "imagefolder", "train", 8, 3, root=str(a), progress=False)
    np.testing.assert_allclose(other_weights.reference.mu, 2 * ref_a.mu, rtol=1e-5)  # same name, other weights
    assert len(list((tmp_path / "cache" / "reference_stats").glob("*.npz"))) == 4
    # Changed contents at the same root are other data: their statistics are computed again.
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(a / "red" / "000.png")
    again = FeatureSpace(_PooledPixels(), "imagefolder", "train", 8, 3, root=str(a), progress=False).reference
    assert again.key["data"] != ref_a.key["data"] and not np.allclose(again.mu, ref_a.mu)


def test_retraining_or_other_data_change_the_feature_name(tmp_path):
    small = DomainClassifierConfig(input_size=8, channels=(4, 8), feature_dim=8, num_classes=3, in_channels=3)
    a = write_image_folder(tmp_path / "a", per_class=10, size=8)
    b = write_image_folder(tmp_path / "b", per_class=10, size=8, offset=100)

    def net(root, **kw):
        return load_or_train_domain_classifier("imagefolder", image_size=8, cache_dir=tmp_path / "cache",
                                               epochs=1, config=small, progress=False, root=root, **kw)

    first = net(a)
    assert net(a).name == first.name  # from the cache
    assert net(a, seed=1).name != first.name  # retrained (another seed): another network, another name
    assert net(b).name != first.name  # another folder of the same name and size
    assert net(a, channels=1).info["key"]["channels"] == 1
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(a / "red" / "000.png")
    assert net(a).name != first.name  # same root, changed data: retrained
    assert len(list((tmp_path / "cache").iterdir())) == 5


def test_cifar10_layout_trains_the_domain_classifier_on_its_splits(tmp_path):
    write_fake_cifar10(tmp_path, per_batch=4)
    small = DomainClassifierConfig(input_size=8, channels=(4, 8), feature_dim=8, num_classes=10, in_channels=3)
    features = load_or_train_domain_classifier("cifar10", image_size=8, cache_dir=tmp_path / "cache", epochs=1,
                                               config=small, progress=False, root=tmp_path)
    assert features.info["num_train"] == 20 and features.info["num_test"] == 4
    assert features.info["key"]["root"] == str(tmp_path.resolve())
    assert features(load_dataset("cifar10", root=tmp_path, split="test", image_size=8)[0][0][None]).shape == (1, 8)


# --------------------------------------------------------------------------------------------------------------------
# bad folders: one clear line, exit 2


def _search_error(tmp_path, folder, capsys) -> str:
    """Train a tiny model on ``folder`` (must succeed) then search with the default metric; returns stderr."""
    config = _config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(folder)}, num_classes=3)
    run = tmp_path / "run"
    assert load_script("train/train_slimmable.py").main(["--config", str(config), "--output-dir", str(run),
                                                      "--no-progress"]) == 0
    capsys.readouterr()
    assert load_script("search/evolve.py").main(["--model", str(run / "model"), "--budget", "0.5"]) == 2
    return capsys.readouterr().err


def test_one_class_folder_trains_but_cannot_make_domain_features(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DDSM_CACHE", str(tmp_path / "cache"))
    folder = write_image_folder(tmp_path / "one", classes=["red"], per_class=8)
    err = _search_error(tmp_path, folder, capsys)
    assert "has 1 class (red)" in err and "at least 2 classes" in err and "--metric fidelity" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "run" / "search" / "schedule.json").exists()


@pytest.mark.parametrize("make, message", [
    (lambda root: (root / "red").mkdir(parents=True), "no images"),
    (lambda root: (write_image_folder(root, per_class=2), (root / "empty").mkdir()), "class folder(s) empty"),
])
def test_bad_folders_stop_training_with_one_line(tmp_path, capsys, make, message):
    make(tmp_path / "bad")
    config = _config(tmp_path / "c.yaml", {"name": "imagefolder", "root": str(tmp_path / "bad")}, num_classes=3)
    assert load_script("train/train_slimmable.py").main(["--config", str(config), "--output-dir",
                                                      str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(tmp_path / "bad") in err and err.count("\n") == 1


def test_mixed_sizes_need_an_image_size(tmp_path):
    write_image_folder(tmp_path, classes=["red"], per_class=2, size=8)
    write_image_folder(tmp_path, classes=["blue"], per_class=2, size=12)
    with pytest.raises(ValueError, match=r"different sizes: .*blue/000.png is 12x12 but .*red/000.png is 8x8.*"
                                         r"image_size"):
        load_dataset("imagefolder", root=tmp_path)
    assert load_dataset("imagefolder", root=tmp_path, image_size=8)[3][0].shape == (3, 8, 8)
