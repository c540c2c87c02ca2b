"""Pure functions on features and their statistics: FID (Fréchet distance) and KID (kernel MMD).

Nothing here knows about networks, files or images: features in, numbers out, as in EDM's ``fid_from_stats``.
Statistics and distances are computed in float64.
"""

from __future__ import annotations

from typing import Optional, Tuple

import warnings

import numpy as np
import scipy.linalg


def _as_features(feats: np.ndarray, name: str = "features") -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2:
        raise ValueError(f"{name} must be (N, D), got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} contain NaN or inf")
    return feats


def feature_stats(feats: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), float64; the covariance is unbiased (N - 1), as
    pytorch-fid's ``np.cov(rowvar=False)``."""
    feats = _as_features(feats)
    if feats.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {feats.shape[0]}")
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^(1/2)) of two covariance (symmetric PSD) matrices, in a form that cannot fail.

    sigma1 sigma2 is similar to the symmetric PSD matrix M = sigma1^(1/2) sigma2 sigma1^(1/2), so the trace is the
    sum of the square roots of M's eigenvalues. sigma1^(1/2) comes from the symmetric eigendecomposition of sigma1;
    eigenvalues below 0 (rounding on a singular matrix) are clipped to 0 in both steps. Everything stays real and
    symmetric, so the result is finite for any finite input, however ill-conditioned (where ``scipy.linalg.sqrtm`` of
    the non-symmetric product can return a large imaginary part or inf).
    """
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    m = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (Heusel et al. 2017; FID on Inception features):

        d^2 = |mu1 - mu2|^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))

    As pytorch-fid: (1) ``scipy.linalg.sqrtm`` of sigma1 @ sigma2; (2) if that is not finite (near-singular
    product, e.g. fewer samples than dimensions), retry with ``eps`` added to both diagonals; (3) a complex result
    is accepted when the imaginary part of its diagonal is below 1e-3 (numerical noise). Where pytorch-fid would
    abort (still not finite, or a larger imaginary part: an ill-conditioned pair), the trace comes instead from the
    stable symmetric form :func:`trace_sqrt_product`, with a ``RuntimeWarning``; on well-conditioned pairs both
    forms agree to about 1e-9 relative, so a search never stops on a metric that merely lost precision.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in shape: mu1 {mu1.shape} vs mu2 {mu2.shape}")
    d = mu1.shape[0]
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"covariances must be ({d}, {d}) to match the means, got {sigma1.shape} and {sigma2.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} contains NaN or inf")

    diff = mu1 - mu2
    trace_covmean = _trace_sqrtm(sigma1, sigma2, eps)
    if trace_covmean is None:
        warnings.warn("sqrtm(sigma1 @ sigma2) is not finite or has a large imaginary part (ill-conditioned "
                      "covariances); using the eigenvalues of sigma1^1/2 sigma2 sigma1^1/2 instead", RuntimeWarning,
                      stacklevel=2)  # fmt: skip
        trace_covmean = trace_sqrt_product(sigma1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def _trace_sqrtm(sigma1: np.ndarray, sigma2: np.ndarray, eps: float) -> Optional[float]:
    """Steps (1)-(3) of :func:`frechet_distance`: Tr(sqrtm(sigma1 @ sigma2)), or None where pytorch-fid aborts."""
    with warnings.catch_warnings():
        # A singular product is expected when there are fewer samples than dimensions (small-N FID); scipy then
        # warns although the trace comes out accurately. Non-finite results are handled below.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        try:
            covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)  # (1)
            if not np.isfinite(covmean).all():  # (2)
                warnings.warn(f"sqrtm(sigma1 @ sigma2) is not finite; adding {eps} to the covariance diagonals",
                              RuntimeWarning, stacklevel=3)  # fmt: skip
                offset = np.eye(len(sigma1)) * eps
                covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
        except np.linalg.LinAlgError:
            return None
    if not np.isfinite(covmean).all():
        return None
    if np.iscomplexobj(covmean):  # (3)
        if np.max(np.abs(np.diagonal(covmean).imag)) > 1e-3:
            return None
        covmean = covmean.real
    return float(np.trace(covmean))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: Optional[float] = None,
                      coef0: float = 1.0) -> np.ndarray:  # fmt: skip
    """k(x, y) = (gamma <x, y> + coef0)^degree, gamma = 1 / D by default: the KID kernel."""
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (x @ y.T * gamma + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 from kernel matrices (Gretton et al. 2012, eq. 3), for m = len(X), n = len(Y) >= 2:

        sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} k(y_i, y_j) / (n (n-1)) - 2 sum_{i,j} k(x_i, y_j) / (m n)

    With m = n this is torch-fidelity's (and Binkowski et al.'s) ``mmd_est="unbiased"``.
    """
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"unbiased MMD needs at least 2 samples per side, got {m} and {n}")
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (n * (n - 1)) - 2.0 * k_xy.sum() / (m * n))


def kernel_inception_distance(
    feats1: np.ndarray,
    feats2: np.ndarray,
    subset_size: int = 1000,
    num_subsets: int = 100,
    seed: int = 0,
) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with the kernel (<x, y> / D + 1)^3, averaged over random subsets.

    As torch-fidelity: ``num_subsets`` times, draw ``subset_size`` rows of each feature set without replacement
    (``np.random.RandomState(seed)``) and compute the unbiased MMD^2; return the mean and the (population) std over
    subsets. When ``subset_size`` covers a whole set, that set is used whole; when it covers both sets, the MMD^2 of
    all samples is computed once and the std is 0. The estimate can be slightly negative when the two distributions
    are equal: it is unbiased, not clipped.
    """
    f1, f2 = _as_features(feats1, "feats1"), _as_features(feats2, "feats2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: feats1 has {f1.shape[1]}, feats2 has {f2.shape[1]}")
    if subset_size < 2 or num_subsets < 1:
        raise ValueError(f"need subset_size >= 2 and num_subsets >= 1, got {subset_size} and {num_subsets}")
    m, n = min(subset_size, len(f1)), min(subset_size, len(f2))

    def mmd(x: np.ndarray, y: np.ndarray) -> float:
        return mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y))

    if m == len(f1) and n == len(f2):
        return mmd(f1, f2), 0.0
    rng = np.random.RandomState(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = f1 if m == len(f1) else f1[rng.choice(len(f1), m, replace=False)]
        y = f2 if n == len(f2) else f2[rng.choice(len(f2), n, replace=False)]
        values[i] = mmd(x, y)
    return float(values.mean()), float(values.std())
