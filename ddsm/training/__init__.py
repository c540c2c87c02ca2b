"""The training stage: run infrastructure, sandwich-rule supernet training, autoencoder training."""

from .run import (TrainingDiverged, step_seed, step_generator, warmup_lambda, ShardedBatchSampler, StepCounter,
                  RunDirectory, read_jsonl, save_pretrained_atomically, make_accelerator)
from .sandwich import sandwich_widths, sandwich_losses, timestep_weights, ExponentialMovingAverage
from .trainer import SlimmableTrainer, TrainResult, train_slimmable
from .autoencoder import latent_scaling_factor, AutoencoderTrainer, AutoencoderResult, train_autoencoder

__all__ = ['TrainingDiverged', 'step_seed', 'step_generator', 'warmup_lambda', 'ShardedBatchSampler', 'StepCounter',
           'RunDirectory', 'read_jsonl', 'save_pretrained_atomically', 'make_accelerator', 'sandwich_widths',
           'sandwich_losses', 'timestep_weights', 'ExponentialMovingAverage', 'SlimmableTrainer', 'TrainResult',
           'train_slimmable',
           'latent_scaling_factor', 'AutoencoderTrainer', 'AutoencoderResult', 'train_autoencoder']
