"""FID on ill-conditioned covariances: where scipy's sqrtm of the product returns a large imaginary part or inf,
the Fréchet distance comes from the stable symmetric form instead of aborting (a search must not stop on it)."""

import warnings

import numpy as np
import pytest
import scipy.linalg

from ddsm.evaluation.metrics import fid
from ddsm.evaluation.metrics.fid import frechet_distance, trace_sqrt_product


def random_spd(rng, d):
    a = rng.standard_normal((d, 2 * d))
    return a @ a.T / (2 * d) + 0.1 * np.eye(d)


def ill_conditioned_pair():
    """Two covariances of 2 samples (rank 1) in 3 features whose scales span 12 orders of magnitude."""
    rng = np.random.default_rng(10)
    scale = 10.0 ** rng.uniform(-6, 6, 3)
    a, b = rng.standard_normal((2, 3)) * scale, rng.standard_normal((2, 3)) * scale[::-1]
    return a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)


def exact_trace_sqrt(s1, s2) -> float:
    """Tr((S1 S2)^1/2) from the eigenvalues of S1 S2 in 60-digit arithmetic (the inputs' doubles taken exactly)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(60):
        eigenvalues, _ = mpmath.eig(mpmath.matrix(s1.tolist()) * mpmath.matrix(s2.tolist()))
        return float(sum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in eigenvalues))


def textbook(mu1, s1, mu2, s2, trace_sqrt) -> float:
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def test_ill_conditioned_pair_falls_back_to_the_stable_form():
    mu1, s1, mu2, s2 = ill_conditioned_pair()
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    assert np.max(np.abs(np.diagonal(covmean).imag)) > 1.0  # pytorch-fid would raise "imaginary component"
    exact = exact_trace_sqrt(s1, s2)
    assert trace_sqrt_product(s1, s2) == pytest.approx(exact, rel=1e-8)
    with pytest.warns(RuntimeWarning, match="eigenvalues of sigma1"):
        value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value)
    assert value == pytest.approx(textbook(mu1, s1, mu2, s2, exact), rel=1e-8)


@pytest.mark.parametrize("bad", ["inf", "complex", "error"])
def test_sqrtm_failures_fall_back_instead_of_aborting(monkeypatch, bad):
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = random_spd(rng, 6), random_spd(rng, 6)
    want = textbook(mu1, s1, mu2, s2, exact_trace_sqrt(s1, s2))

    def broken_sqrtm(a, *args, **kwargs):
        if bad == "error":
            raise np.linalg.LinAlgError("sqrtm failed")
        return np.full_like(a, np.inf) if bad == "inf" else a + 1j * np.eye(len(a))

    monkeypatch.setattr(fid.scipy.linalg, "sqrtm", broken_sqrtm)
    with pytest.warns(RuntimeWarning) as record:  # inf: pytorch-fid's eps retry first, then the fallback
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    assert any("eigenvalues of sigma1" in str(w.message) for w in record)


@pytest.mark.parametrize("d", [4, 32, 128])
def test_both_forms_agree_on_well_conditioned_pairs(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d) * 0.3
    s1, s2 = random_spd(rng, d), random_spd(rng, d) * 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the sqrtm path, no fallback
        value = frechet_distance(mu1, s1, mu2, s2)
    assert value == pytest.approx(textbook(mu1, s1, mu2, s2, trace_sqrt_product(s1, s2)), rel=1e-6)
    assert trace_sqrt_product(s1, s2) == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2).real), rel=1e-9)


def test_stable_form_of_singular_covariances():
    # Fewer samples than dimensions: both covariances rank-deficient; tiny negative eigenvalues are clipped.
    rng = np.random.default_rng(1)
    s1, s2 = np.cov(rng.standard_normal((10, 64)), rowvar=False), np.cov(rng.standard_normal((10, 64)), rowvar=False)
    value = trace_sqrt_product(s1, s2)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(np.trace(scipy.linalg.sqrtm(s1 @ s2).real), rel=1e-6)
