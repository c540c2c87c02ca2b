"""The training stage: run infrastructure, sandwich-rule supernet training, autoencoder training."""

from .trainer import (
    TrainingDiverged, step_seed, step_generator, sandwich_widths, sandwich_losses, ExponentialMovingAverage,
    ShardedBatchSampler, RunDirectory, SlimmableTrainer, TrainResult, train_slimmable, make_accelerator,
    warmup_lambda
)
from .autoencoder import (
    build_autoencoder, load_autoencoder, latent_shape, check_latent_model, latent_scaling_factor,
    autoencoder_image_size, AutoencoderTrainer, AutoencoderResult, train_autoencoder
)

__all__ = ['TrainingDiverged', 'step_seed', 'step_generator', 'sandwich_widths', 'sandwich_losses',
           'ExponentialMovingAverage', 'ShardedBatchSampler', 'RunDirectory', 'SlimmableTrainer', 'TrainResult',
           'train_slimmable', 'make_accelerator', 'warmup_lambda', 'build_autoencoder', 'load_autoencoder',
           'latent_shape', 'check_latent_model', 'latent_scaling_factor', 'autoencoder_image_size',
           'AutoencoderTrainer', 'AutoencoderResult', 'train_autoencoder']
