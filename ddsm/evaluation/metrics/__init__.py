"""Metrics: FID/KID on Inception or fast domain features, cached reference statistics, PSNR/SSIM fidelity.

Every feature network has a ``name`` ("inception-2015-12-05", "mnist-5k-16px-cnn-v1-3fa2b1c0", ...): reports carry
it next to each number so that a domain-feature FID is never mistaken for Inception FID. Importing this package loads
no weights and touches no file.
"""

from .domain import (
    classifier_accuracy,
    domain_features_name,
    load_domain_classifier,
    load_or_train_domain_classifier,
    save_domain_classifier,
    train_domain_classifier,
)
from .domain_net import DomainClassifier, DomainClassifierConfig, DomainFeatures
from .features import extract_features, feature_network_name
from .fid import feature_stats, frechet_distance, kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from .fidelity import PSNR_CAP_DB, fidelity_summary, psnr, ssim
from .inception import (
    INCEPTION_NAME,
    FIDInceptionV3,
    InceptionFeatures,
    default_torchscript_path,
    load_fid_inception,
    load_torchscript,
    torchscript_to_fid_state_dict,
)
from .reference import (
    ReferenceStats,
    ReferenceStatsMismatchError,
    load_or_compute_reference_stats,
    reference_stats_filename,
    weights_sha256,
)

__all__ = [
    "DomainClassifier",
    "DomainClassifierConfig",
    "DomainFeatures",
    "FIDInceptionV3",
    "INCEPTION_NAME",
    "InceptionFeatures",
    "PSNR_CAP_DB",
    "ReferenceStats",
    "ReferenceStatsMismatchError",
    "classifier_accuracy",
    "default_torchscript_path",
    "domain_features_name",
    "extract_features",
    "feature_network_name",
    "feature_stats",
    "fidelity_summary",
    "frechet_distance",
    "kernel_inception_distance",
    "load_domain_classifier",
    "load_fid_inception",
    "load_or_compute_reference_stats",
    "load_or_train_domain_classifier",
    "load_torchscript",
    "mmd2_unbiased",
    "polynomial_kernel",
    "psnr",
    "reference_stats_filename",
    "save_domain_classifier",
    "ssim",
    "torchscript_to_fid_state_dict",
    "train_domain_classifier",
    "weights_sha256",
]
