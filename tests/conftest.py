import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests want fixed threads (training gradients differ in the last bits between thread counts): no adapting.
os.environ.setdefault("DDSM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Caches (MACs tables, reference statistics, classifiers) go to a per-session folder unless DDSM_CACHE is set,
    so tests never read a developer's stale cache."""
    if "DDSM_CACHE" not in os.environ:
        os.environ["DDSM_CACHE"] = str(tmp_path_factory.mktemp("ddsm-cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; with two, OpenMP spin-waits whenever another process holds a core of
    a shared 2-core machine (forwards then take 10-100x longer). Use with ``pytestmark``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def load_script(path: str):
    """Import a command-line script of the repository (``"eval/sample.py"``) as a module, to call its
    ``main(argv)`` in-process."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(Path(path).stem + "_script_module", root / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_unet_kwargs(**overrides):
    """A tiny class-conditional slimmable UNet (16 px, three levels, attention at 8 px and in the middle)."""
    kw = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
              attention_resolutions=(8,), attention_head_dim=8, norm_num_groups=4, num_classes=10,
              width_choices=(0.25, 0.5, 0.75, 1.0), channel_divisor=4)
    kw.update(overrides)
    return kw


def halved_tiny_unet(seed: int = 0, **overrides):
    """:func:`tiny_unet_kwargs`'s UNet (eval mode) with its random weights halved, so samples do not explode."""
    from ddsm.models import SlimmableUNet

    torch.manual_seed(seed)
    model = SlimmableUNet(**tiny_unet_kwargs(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    return model.eval()


@pytest.fixture
def tiny_unet():
    from ddsm.models import SlimmableUNet

    torch.manual_seed(0)
    model = SlimmableUNet(**tiny_unet_kwargs())
    with torch.no_grad():  # random weights everywhere, so no zero-initialised layer hides a slicing bug
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model.eval()


class _RandomFeatures(torch.nn.Module):
    """A fixed random conv net as the feature network: trains nothing, so the test skips the ~20 s of training the
    domain classifier on a CPU (that classifier has its own tests) but still runs the real FID code."""

    name = "random-conv-test-features"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


@pytest.fixture
def fast_domain_features(monkeypatch):
    from ddsm.evaluation import FeatureSpace

    def domain(cls, dataset, resolution, channels, progress=True, **kw):
        return cls(_RandomFeatures(), dataset, "train", resolution, channels, reference_samples=64,
                   progress=False, **kw)

    monkeypatch.setattr(FeatureSpace, "domain", classmethod(domain))
