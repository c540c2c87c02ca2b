"""ddsm: Denoising Diffusion Step-aware Models, a toolkit.

One weight-shared slimmable UNet serves many widths; a search picks a width per denoising step under a compute
budget; samplers run that step-aware schedule with any diffusers scheduler.
"""

__version__ = "0.1.0"
