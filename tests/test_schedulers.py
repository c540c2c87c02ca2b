"""Every scheduler of SCHEDULERS under the step-aware loop: widths and skips, MACs, per-sample seeds, timestep
counts that are not num_inference_steps (PNDM, Heun, KDPM2), and a Gaussian whose exact noise predictor must be
sampled at the right spread."""

import copy
import functools
import re
import types

import numpy as np
import pytest
import torch

from ddsm import DDSMPipeline, Schedule, ScheduleError, sample
from ddsm.models import macs_table
from ddsm.sampling import SCHEDULERS, UNSUPPORTED, build_scheduler, set_timestep_count, step_kwargs

# KDPM2 converts sigmas to timesteps with numpy calls on tensors, which numpy 2 flags at every call.
pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")]

# 15 timesteps: 15 steps for single-step schedulers, 6 for PNDM (n + 9), 8 for Heun and KDPM2 (2n - 1).
WIDTHS = [1.0, 0.5, 0.0, 0.25, 0.0, 0.0, 0.75, 1.0, 0.0, 0.5, 0.25, 0.0, 1.0, 0.5, 1.0]


@pytest.fixture
def model(tiny_unet):
    with torch.no_grad():  # smaller random weights keep random-weight sampling numerically tame
        for p in tiny_unet.parameters():
            p.mul_(0.25)
    macs_table(tiny_unet)  # count MACs now (fvcore runs forwards), so the spies below see only sampling's forwards
    return tiny_unet


def _spied_sample(model, scheduler, seeds, labels, batch_size=3, global_seed=0):
    """``sample`` with WIDTHS on a copy of ``scheduler``, counting model forwards and recording what
    ``scheduler.step`` receives."""
    scheduler = copy.deepcopy(scheduler)  # KDPM2 takes half a second to build
    steps, forwards = [], []

    @functools.wraps(scheduler.step)  # keeps the signature, which the loop reads to pick step kwargs
    def step(model_output, timestep, sample, **kwargs):
        steps.append((model_output.clone(), kwargs))
        return original(model_output, timestep, sample, **kwargs)

    original, scheduler.step = scheduler.step, step
    hook = model.register_forward_hook(lambda *args: forwards.append(1))
    torch.manual_seed(global_seed)  # the global RNG must not matter: every draw comes from a per-sample generator
    try:
        out = sample(model, scheduler, WIDTHS, seeds=seeds, class_labels=labels, batch_size=batch_size,
                     progress=False)
    finally:
        hook.remove()
    return out, steps, len(forwards)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_runs_widths_and_skips_per_seed(model, name):
    scheduler = build_scheduler(name, {})
    out, steps, forwards = _spied_sample(model, scheduler, seeds=[3, 4, 5], labels=[0, 1, 2])
    assert out.images.shape == (3, 1, 16, 16) and torch.isfinite(out.images).all()
    assert out.widths == WIDTHS and len(out.timesteps) == len(WIDTHS)

    # one forward per computed step, none at a skip, whose step gets the previous prediction again
    computed = [w != 0 for w in WIDTHS]
    assert out.computed.tolist() == [computed] * 3
    assert forwards == sum(computed) and len(steps) == len(WIDTHS)
    for k in range(1, len(WIDTHS)):
        assert torch.equal(steps[k][0], steps[k - 1][0]) == (not computed[k]), f"step {k}"
    table = macs_table(model)
    assert out.macs_per_image == sum(table[w] for w in WIDTHS if w)
    assert out.full_macs_per_image == table[1.0] * len(WIDTHS)

    # stochastic steps draw from one generator per sample
    accepts_generator = "generator" in step_kwargs(scheduler, generator=None)
    assert all(("generator" in kw) == accepts_generator for _, kw in steps)
    if accepts_generator:
        assert all(len(kw["generator"]) == 3 for _, kw in steps)

    # reproducible, independent of batch size, of the other seeds in the batch and of the global RNG
    again, _, _ = _spied_sample(model, scheduler, seeds=[3, 4, 5], labels=[0, 1, 2], global_seed=1)
    assert torch.equal(out.images, again.images)
    # (up to the round-off of batched convolutions, which the sigma-scaled latents of Euler-type schedulers grow)
    one_by_one, _, _ = _spied_sample(model, scheduler, seeds=[3, 4, 5], labels=[0, 1, 2], batch_size=1)
    torch.testing.assert_close(one_by_one.images, out.images, rtol=0, atol=1e-4)
    others, _, _ = _spied_sample(model, scheduler, seeds=[9, 4], labels=[7, 1], global_seed=2)
    torch.testing.assert_close(others.images[1], out.images[1], rtol=0, atol=1e-4)
    assert (out.images[0] - out.images[1]).abs().max() > 1e-3


@pytest.mark.parametrize("name, count, steps", [("DDIMScheduler", 15, 15), ("UniPCMultistepScheduler", 15, 15),
                                                ("PNDMScheduler", 15, 6), ("HeunDiscreteScheduler", 15, 8),
                                                ("KDPM2AncestralDiscreteScheduler", 1, 1)])
def test_set_timestep_count_finds_the_step_count(name, count, steps):
    scheduler = build_scheduler(name, {})
    assert set_timestep_count(scheduler, count) == steps
    assert len(scheduler.timesteps) == count and scheduler.num_inference_steps == steps


@pytest.mark.parametrize("name, count, message", [
    ("HeunDiscreteScheduler", 14, r"set_timesteps\(13\) gives 25 and set_timesteps\(14\) gives 27"),
    ("PNDMScheduler", 5, r"cannot visit exactly 5 timesteps"),
    ("DDIMScheduler", 0, r"timestep count 0: expected an int >= 1"),
])
def test_set_timestep_count_refuses_counts_the_scheduler_cannot_visit(model, name, count, message):
    with pytest.raises(ScheduleError, match=message):
        set_timestep_count(build_scheduler(name, {}), count)
    if count:
        with pytest.raises(ScheduleError, match=message):
            sample(model, build_scheduler(name, {}), [1.0] * count, seeds=[0], progress=False)


def test_unsupported_schedulers_are_refused_with_the_reason():
    for name, reason in UNSUPPORTED.items():
        with pytest.raises(ValueError, match=re.escape(f"{name}' is not supported: {reason};")):
            build_scheduler(name, {})
    with pytest.raises(ValueError, match="'NoSuchScheduler' is not supported; expected one of"):
        build_scheduler("NoSuchScheduler", {})


@pytest.mark.parametrize("name, steps", [("PNDMScheduler", 6), ("HeunDiscreteScheduler", 8)])
def test_schedule_length_is_the_scheduler_timestep_count(model, tmp_path, name, steps):
    """A Schedule for PNDM or Heun holds one width per timestep, survives a save/load round trip and samples
    like its widths; the pipeline's num_inference_steps means set_timesteps' argument."""
    schedule = Schedule.from_widths(model, build_scheduler(name, {}), WIDTHS, num_inference_steps=steps)
    assert len(schedule) == schedule.num_inference_steps == len(WIDTHS)
    schedule.save(tmp_path / "s.json")
    loaded = Schedule.load(tmp_path / "s.json", model)
    direct = sample(model, build_scheduler(name, {}), WIDTHS, seeds=[0, 1], progress=False)
    tied = sample(model, build_scheduler(name, {}), loaded, seeds=[0, 1], progress=False)
    torch.testing.assert_close(tied.images, direct.images, rtol=0, atol=0)

    pipe = DDSMPipeline(unet=model, scheduler=build_scheduler(name, {}), schedule=loaded)
    same = pipe(seeds=[0, 1], num_inference_steps=steps, output_type="pt", progress=False).images
    torch.testing.assert_close(same, direct.images, rtol=0, atol=0)
    pipe(seeds=[0], num_inference_steps=steps + 2, output_type="pt", progress=False)
    assert len(pipe.last_result.widths) == len(WIDTHS) + (2 if name == "PNDMScheduler" else 4)


class GaussianOracle(torch.nn.Module):
    """The exact noise predictor for data ~ N(0, std^2) under ``scheduler``'s noise schedule; a fractional
    timestep is interpolated in log sigma."""

    def __init__(self, scheduler, std: float):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the loop reads device and dtype from a parameter
        self.config = types.SimpleNamespace(in_channels=1, sample_size=8, num_classes=None)
        self.width_choices = (1.0,)
        alphas = scheduler.alphas_cumprod.double()
        self.log_sigmas = (((1 - alphas) / alphas) ** 0.5).log().numpy()
        self.std = std

    def forward(self, x, t, class_labels=None, width=1.0):
        sigma = np.exp(np.interp(float(t), np.arange(len(self.log_sigmas)), self.log_sigmas))
        alpha = 1 / (1 + sigma ** 2)
        eps = (1 - alpha) ** 0.5 * x / (alpha * self.std ** 2 + 1 - alpha)
        return types.SimpleNamespace(sample=eps)


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_scheduler_samples_a_gaussian_with_its_exact_predictor(name):
    """The loop drives each scheduler right (initial noise, input scaling, timesteps, step): 99 timesteps of
    N(0, 0.3^2)'s exact noise predictor give samples of spread 0.3."""
    scheduler = build_scheduler(name, {})
    out = sample(GaussianOracle(scheduler, 0.3), scheduler, [1.0] * 99, seeds=range(64), progress=False,
                 macs_table={1.0: 1})
    assert out.images.std().item() == pytest.approx(0.3, abs=0.035)
    assert abs(out.images.mean().item()) < 0.02
