"""The model stage: slimmable layers, SlimmableUNet and its static subnets, MACs per width."""

from .unet import SlimmableUNet, StaticSubnet, WidthPlan, slim_channels
from .macs import sdpa_macs, count_macs, fvcore_macs, macs_table, MACS_CACHE_VERSION

__all__ = ['SlimmableUNet', 'StaticSubnet', 'WidthPlan', 'slim_channels', 'sdpa_macs', 'count_macs', 'fvcore_macs',
           'macs_table', 'MACS_CACHE_VERSION']
