"""The step-aware UNet inside diffusers' own DDPMPipeline, DDIMPipeline and LDMPipeline: the same images as
ddsm.sample for the same noise, the cost spent, exact timestep matching, and enable / disable."""

import logging

import numpy as np
import pytest
import torch
from diffusers import (DDIMPipeline, DDIMScheduler, DDPMPipeline, DDPMScheduler, LDMPipeline, UNet2DModel,
                       VQModel)

from ddsm import Schedule, ScheduleError, SlimmableUNet, StepAwareUNet, disable_step_aware, enable_step_aware, sample
from ddsm.models import macs_table

pytestmark = pytest.mark.usefixtures("one_thread")

SEEDS = [5, 6, 7]
WIDTHS = [1.0, 0.5, 0.0, 0.25, 0.75, 0.0, 0.0, 1.0]  # skips, every width, full width first and last
HALF = [1.0, 0.5, 0.0, 0.5, 1.0, 0.0, 0.0, 1.0]      # the widths the tiny layouts convert to by default


def _random(module, std=0.05, seed=3):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, std)
    return module.eval()


def _dense(**overrides):
    kw = dict(sample_size=16, in_channels=1, out_channels=1, block_out_channels=(16, 32, 32), layers_per_block=1,
              down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
              up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
              flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)
    kw.update(overrides)
    return _random(UNet2DModel(**kw))


def _vq():
    """A tiny VQModel: 16 px RGB images, 3-channel 8 px latents, 16 codes."""
    return _random(VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                           up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                           latent_channels=3, norm_num_groups=4, num_vq_embeddings=16, sample_size=16), std=0.2)


def _generators(seeds):
    """One CPU generator per sample, seeded as ddsm.sample seeds its own: the same initial and step noise."""
    return [torch.Generator().manual_seed(s) for s in seeds]


def _schedule(supernet, scheduler, widths=WIDTHS):
    return Schedule.from_widths(supernet, scheduler, widths, num_inference_steps=len(widths))


def _as_ddsm(images: np.ndarray) -> torch.Tensor:
    """Pipeline images (N, H, W, C) in [0, 1] as ddsm.sample's (N, C, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2) * 2 - 1


@pytest.mark.parametrize("scheduler_cls, pipeline_cls", [(DDPMScheduler, DDPMPipeline), (DDIMScheduler, DDIMPipeline)])
def test_stock_pipeline_with_adapter_equals_ddsm_sample(scheduler_cls, pipeline_cls):
    dense = _dense()
    pipe = pipeline_cls(unet=dense, scheduler=scheduler_cls())
    pipe.set_progress_bar_config(disable=True)
    supernet = SlimmableUNet.from_dense(dense, channel_divisor=4).eval()
    schedule = _schedule(supernet, scheduler_cls())
    ours = sample(supernet, scheduler_cls(), schedule, seeds=SEEDS, progress=False)

    unet = enable_step_aware(pipe, schedule, supernet=supernet)
    assert pipe.unet is unet and isinstance(unet, StepAwareUNet) and unet.replaced is dense
    for _ in range(2):                                       # the cost is per pipeline call, not accumulated
        out = pipe(batch_size=len(SEEDS), generator=_generators(SEEDS), num_inference_steps=len(WIDTHS),
                   output_type="np").images
        assert (_as_ddsm(out) - ours.images).abs().max().item() <= 1e-5
        assert unet.spent_macs == schedule.with_macs(macs_table(supernet)).macs["total"] == ours.macs_per_image
        assert unet.spent_macs_batch == unet.spent_macs * len(SEEDS)
        assert (unet.calls, unet.network_runs) == (len(WIDTHS), sum(w != 0 for w in WIDTHS))
        assert [s["width"] for s in unet.steps] == WIDTHS
    assert unet.summary()["macs_ratio"] == pytest.approx(ours.macs_per_image / ours.full_macs_per_image)


@pytest.mark.parametrize("scheduler_cls, pipeline_cls", [(DDPMScheduler, DDPMPipeline), (DDIMScheduler, DDIMPipeline)])
def test_disable_restores_the_dense_pipeline_exactly(scheduler_cls, pipeline_cls):
    dense = _dense()
    pipe = pipeline_cls(unet=dense, scheduler=scheduler_cls())
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(batch_size=2, generator=_generators([1, 2]), num_inference_steps=4, output_type="pt").images

    before, config_before = run(), dict(pipe.config)
    supernet = SlimmableUNet.from_dense(dense, channel_divisor=4)
    enable_step_aware(pipe, _schedule(supernet, scheduler_cls(), [1.0, 0.25, 0.0, 0.5]), supernet=supernet)
    assert pipe.config["unet"][1] == "StepAwareUNet"
    assert pipe.to("cpu").device == torch.device("cpu") and pipe.dtype == torch.float32
    narrow = run()
    assert disable_step_aware(pipe) is dense and pipe.unet is dense
    assert dict(pipe.config) == config_before
    assert torch.equal(run(), before)
    assert (narrow - before).abs().max() > 1e-3               # the schedule did change the images


def test_ldm_pipeline_with_vqmodel_equals_ddsm_sample():
    vq = _vq()
    dense = _dense(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32),
                   down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                   flip_sin_to_cos=True, freq_shift=0, downsample_padding=1)
    scheduler_config = dict(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False)
    pipe = LDMPipeline(vqvae=vq, unet=dense, scheduler=DDIMScheduler(**scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    supernet = SlimmableUNet.from_dense(dense).eval()       # what enable_step_aware converts to, by itself
    assert supernet.width_choices == (0.5, 1.0)
    schedule = _schedule(supernet, DDIMScheduler(**scheduler_config), HALF)
    ours = sample(supernet, DDIMScheduler(**scheduler_config), schedule, seeds=SEEDS, autoencoder=vq, progress=False)
    assert ours.images.shape == (3, 3, 16, 16) and ours.decode_macs_per_image > 0

    unet = enable_step_aware(pipe, schedule)
    out = pipe(batch_size=len(SEEDS), generator=_generators(SEEDS), num_inference_steps=len(HALF),
               output_type="np").images
    assert (_as_ddsm(out) - ours.images).abs().max().item() <= 1e-5
    assert unet.spent_macs == ours.macs_per_image


def test_timesteps_must_match_the_schedule():
    dense = _dense()
    pipe = DDIMPipeline(unet=dense, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    supernet = SlimmableUNet.from_dense(dense)
    enable_step_aware(pipe, _schedule(supernet, DDIMScheduler(), HALF))
    with pytest.raises(ScheduleError, match=r"passed timestep 950 at its call 0.*expects timestep 875.*remap"):
        pipe(batch_size=1, num_inference_steps=20)
    with pytest.raises(ScheduleError, match="one value per call"):
        pipe.unet(torch.zeros(2, 1, 16, 16), torch.tensor([875, 750]))
    unet = pipe.unet
    unet(torch.zeros(1, 1, 16, 16), 875)                      # a first step starts a run ...
    with pytest.raises(ScheduleError, match="passed timestep 500 at its call 1.*expects timestep 750"):
        unet(torch.zeros(1, 1, 16, 16), 500)                  # ... which must go on in order
    out = unet(torch.zeros(1, 1, 16, 16), 875, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 1, 16, 16) and unet.calls == 1


def test_enable_and_disable_refuse_clearly(caplog):
    dense = _dense()
    pipe = DDIMPipeline(unet=dense, scheduler=DDIMScheduler())
    with caplog.at_level(logging.WARNING):
        assert disable_step_aware(pipe) is None
    assert "not enabled" in caplog.text
    other = SlimmableUNet.from_dense(dense, width_choices=(0.5, 1.0), channel_divisor=4)
    with pytest.raises(ScheduleError, match="made for another model"):
        enable_step_aware(pipe, _schedule(other, DDIMScheduler(), HALF))   # converted with divisor 8: not `other`
    assert pipe.unet is dense
    pipe.unet = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="unet is a Linear.*UNet2DModel"):
        enable_step_aware(pipe, _schedule(other, DDIMScheduler(), HALF))


def test_enabling_again_replaces_the_schedule_and_keeps_the_dense_unet():
    dense = _dense()
    pipe = DDIMPipeline(unet=dense, scheduler=DDIMScheduler())
    supernet = SlimmableUNet.from_dense(dense)
    first = enable_step_aware(pipe, _schedule(supernet, DDIMScheduler(), HALF), supernet=supernet)
    second = enable_step_aware(pipe, _schedule(supernet, DDIMScheduler(), [1.0, 0.0, 0.5]), supernet=supernet)
    assert second is not first and second.replaced is dense and len(second.schedule) == 3
    assert disable_step_aware(pipe) is dense
