"""The model stage: slimmable layers, SlimmableUNet and its static subnets, MACs per width."""

from .layers import slim_channels
from .unet import SlimmableUNet, StaticSubnet, WidthPlan
from .macs import sdpa_macs, cdist_macs, count_macs, fvcore_macs, macs_table, MACS_CACHE_VERSION
from .autoencoder import (build_autoencoder, load_autoencoder, latent_shape, check_latent_model, autoencoder_image_size,
                          autoencoder_class, encode_latents, decode_latents, AUTOENCODER_CLASSES)
from .convert import WIDTH_CANDIDATES, load_dense

__all__ = ['SlimmableUNet', 'StaticSubnet', 'WidthPlan', 'slim_channels', 'sdpa_macs', 'cdist_macs', 'count_macs',
           'fvcore_macs', 'macs_table', 'MACS_CACHE_VERSION']
__all__ += ['build_autoencoder', 'load_autoencoder', 'latent_shape', 'check_latent_model', 'autoencoder_image_size',
            'autoencoder_class', 'encode_latents', 'decode_latents', 'AUTOENCODER_CLASSES', 'WIDTH_CANDIDATES',
            'load_dense']
