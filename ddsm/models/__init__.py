"""The model stage: slimmable layers, SlimmableUNet and its static subnets, MACs per width."""

from .layers import slim_channels
from .unet import SlimmableUNet, StaticSubnet, WidthPlan
from .macs import sdpa_macs, count_macs, fvcore_macs, macs_table, MACS_CACHE_VERSION
from .autoencoder import build_autoencoder, load_autoencoder, latent_shape, check_latent_model, autoencoder_image_size

__all__ = ['SlimmableUNet', 'StaticSubnet', 'WidthPlan', 'slim_channels', 'sdpa_macs', 'count_macs', 'fvcore_macs',
           'macs_table', 'MACS_CACHE_VERSION']
__all__ += ['build_autoencoder', 'load_autoencoder', 'latent_shape', 'check_latent_model', 'autoencoder_image_size']
