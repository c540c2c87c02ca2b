"""Step-aware sampling inside the stock diffusers pipelines (``DDPMPipeline``, ``DDIMPipeline``, ``LDMPipeline``...).

:class:`StepAwareUNet` stands in for a pipeline's ``unet``: it takes the same call (``unet(sample, timestep)``) and
returns the same ``UNet2DOutput``, and runs the supernet at the width the schedule gives for that timestep; at a
skipped step (width 0) it returns the previous prediction without running any network. It records the MACs it
spends. :func:`enable_step_aware` swaps it into a pipeline, :func:`disable_step_aware` puts the dense UNet back::

    from diffusers import DDIMPipeline
    from ddsm import Schedule, SlimmableUNet, enable_step_aware, disable_step_aware

    pipe = DDIMPipeline.from_pretrained("ddpm-cifar10-32")             # a local folder
    supernet = SlimmableUNet.from_pretrained("runs/cifar10/model")       # fine-tuned with --init-from
    schedule = Schedule.load("runs/cifar10/search/schedule.json", supernet)
    unet = enable_step_aware(pipe, schedule, supernet=supernet)
    images = pipe(batch_size=16, num_inference_steps=len(schedule)).images
    print(unet.spent_macs, unet.network_runs)                            # per sample, this pipeline call
    disable_step_aware(pipe)                                             # the dense UNet again

Timesteps must match the schedule's exactly: call ``k`` of a pipeline run must pass ``schedule.timesteps[k]``, so
run the pipeline with the scheduler and step count the schedule was made for (or ``schedule.remap`` it onto the
pipeline's scheduler first). Any other timestep raises a :class:`~ddsm.schedules.ScheduleError`; nothing is rounded
to a nearest step. A call at the schedule's first timestep (when it does not continue the current run) starts a
new run: the step counter, the kept prediction and the spent cost are reset, so they describe one pipeline call.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from ..models import SlimmableUNet, macs_table
from ..schedules import Schedule, ScheduleError

__all__ = ["StepAwareUNet", "enable_step_aware", "disable_step_aware"]

logger = logging.getLogger(__name__)


def _timestep_value(timestep: Union[torch.Tensor, float, int]) -> float:
    """The one timestep of a call: a number, or a tensor whose entries are all equal."""
    if not torch.is_tensor(timestep):
        return float(timestep)
    values = timestep.reshape(-1)
    if values.numel() == 0 or (values != values[0]).any():
        raise ScheduleError(f"step-aware UNet: timestep {timestep.tolist()} must be one value per call (the width "
                            "is chosen per timestep)")
    return float(values[0])


class StepAwareUNet(torch.nn.Module):
    r"""A drop-in ``unet`` for diffusers pipelines that runs a :class:`~ddsm.SlimmableUNet` at the width a
    :class:`~ddsm.Schedule` gives for each timestep, and reuses the previous prediction at a skipped step.

    Args:
        supernet: The slimmable UNet to run.
        schedule: A width per timestep, made for ``supernet`` (its fingerprint is checked).
        macs: MACs of one forward of one sample per width, for the schedule's widths and the full width
            (default: :func:`ddsm.models.macs_table`, cached).
        replaced: The pipeline's own UNet this one stands in for (kept for :func:`disable_step_aware`; not a
            submodule, so its weights are neither moved nor counted with this module's).
        allow_fingerprint_mismatch: Use a schedule made for another config on purpose (warns).

    After (or during) a pipeline call: ``calls`` (forwards asked for), ``network_runs`` (forwards run),
    ``spent_macs`` (MACs per sample of the batch, what :meth:`Schedule.with_macs` calls ``total``),
    ``spent_macs_batch`` (all samples of the batches together) and ``steps`` (per call: timestep, width, MACs per
    sample). ``config``, ``dtype`` and ``device`` are the supernet's (same ``in_channels``, ``out_channels`` and
    ``sample_size`` as the dense UNet).
    """

    def __init__(self, supernet: SlimmableUNet, schedule: Schedule, macs: Optional[Mapping[float, int]] = None,
                 replaced: Optional[torch.nn.Module] = None, allow_fingerprint_mismatch: bool = False):
        super().__init__()
        if not isinstance(supernet, SlimmableUNet):
            raise TypeError(f"supernet must be a SlimmableUNet, got {type(supernet).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a ddsm.Schedule, got {type(schedule).__name__}")
        schedule.check_model(supernet, allow_fingerprint_mismatch)
        needed = sorted({w for w in schedule.widths if w != 0} | {max(supernet.width_choices)})
        table = {float(w): int(m) for w, m in (macs or macs_table(supernet, needed)).items()}
        missing = [w for w in needed if w not in table]
        if missing:
            raise ValueError(f"macs has no entry for width(s) {missing} (the schedule's and the full width; it has "
                             f"{sorted(table)})")
        self.supernet, self.schedule, self.macs_table = supernet, schedule, table
        self._replaced = (replaced,)  # a tuple: not registered as a submodule
        self.reset()

    @property
    def replaced(self) -> Optional[torch.nn.Module]:
        """The pipeline UNet this one stands in for (None when built directly)."""
        return self._replaced[0]

    @property
    def config(self):
        return self.supernet.config

    @property
    def dtype(self) -> torch.dtype:
        return self.supernet.dtype

    @property
    def device(self) -> torch.device:
        return self.supernet.device

    def reset(self) -> None:
        """Forget the current run: step counter, kept prediction and spent cost."""
        self.cursor = 0
        self.previous: Optional[torch.Tensor] = None
        self.calls = self.network_runs = 0
        self.spent_macs = self.spent_macs_batch = 0
        self.steps: List[Dict[str, float]] = []

    def _step_index(self, t: float) -> int:
        """The schedule step of a call at timestep ``t``: the next one of the current run, or the first of a new
        run; anything else is a ScheduleError."""
        ts = self.schedule.timesteps
        if self.cursor < len(ts) and t == ts[self.cursor]:
            return self.cursor
        if t == ts[0]:
            self.reset()
            return 0
        shown = ", ".join(f"{x:g}" for x in ts[:6]) + (", ..." if len(ts) > 6 else "")
        expected = f"timestep {ts[self.cursor]:g}" if self.cursor < len(ts) else "no further call"
        made_for = f"{self.schedule.scheduler_class_name or 'its scheduler'}, {len(ts)} timesteps"
        raise ScheduleError(
            f"step-aware UNet: the pipeline passed timestep {t:g} at its call {self.cursor}, but the schedule "
            f"({len(ts)} steps: {shown}) expects {expected} there; run the pipeline as the schedule was made "
            f"({made_for}), or remap it onto the pipeline's scheduler: schedule.remap(scheduler=pipe.scheduler) "
            "after pipe.scheduler.set_timesteps(n)")

    def forward(self, sample: torch.Tensor, timestep: Union[torch.Tensor, float, int],
                class_labels: Optional[torch.Tensor] = None,
                return_dict: bool = True) -> Union[UNet2DOutput, Tuple[torch.Tensor]]:
        """The noise prediction of the schedule's width at ``timestep`` (as ``UNet2DModel.forward``); the previous
        prediction at a skipped step."""
        k = self._step_index(_timestep_value(timestep))
        width = float(self.schedule.widths[k])
        if width:
            out = self.supernet(sample, timestep, class_labels=class_labels, width=width).sample
            self.previous, self.network_runs = out, self.network_runs + 1
        elif self.previous is None or self.previous.shape[0] != sample.shape[0]:
            raise ScheduleError(f"step-aware UNet: step {k} is a skip but there is no prediction of this batch "
                                f"({sample.shape[0]} samples) to reuse")
        else:
            out = self.previous
        macs = self.macs_table[width] if width else 0
        self.cursor, self.calls = k + 1, self.calls + 1
        self.spent_macs += macs
        self.spent_macs_batch += macs * sample.shape[0]
        self.steps.append(dict(timestep=float(self.schedule.timesteps[k]), width=width, macs=macs))
        return UNet2DOutput(sample=out) if return_dict else (out,)

    def summary(self) -> Dict[str, Any]:
        """What the current (or last) run spent, next to the full width at every step."""
        full = self.macs_table[max(self.supernet.width_choices)]
        return dict(calls=self.calls, network_runs=self.network_runs, spent_macs=self.spent_macs,
                    spent_macs_batch=self.spent_macs_batch, full_macs=full * self.calls,
                    macs_ratio=self.spent_macs / (full * self.calls) if self.calls else 0.0)


def _pipeline_unet(pipe) -> torch.nn.Module:
    unet = getattr(pipe, "unet", None)
    if not isinstance(unet, torch.nn.Module):
        raise ValueError(f"{type(pipe).__name__} has no `unet` component to make step-aware (it has "
                         f"{sorted(getattr(pipe, 'components', {}))})")
    return unet


def enable_step_aware(pipe, schedule: Schedule, supernet: Optional[SlimmableUNet] = None, *,
                      macs: Optional[Mapping[float, int]] = None,
                      allow_fingerprint_mismatch: bool = False) -> StepAwareUNet:
    """Make ``pipe`` (a diffusers pipeline with a ``unet``) run ``schedule``: its ``unet`` becomes a
    :class:`StepAwareUNet`, which is returned (read its spent cost after a call).

    The supernet is ``supernet`` if given, else the pipeline's UNet when it already is a :class:`SlimmableUNet`,
    else the pipeline's dense ``UNet2DModel`` converted with :meth:`SlimmableUNet.from_dense` at the schedule's
    ``width_choices``. It is moved to the pipeline UNet's device and dtype. Enabling again replaces the schedule;
    :func:`disable_step_aware` restores the pipeline's own UNet (do so before ``pipe.save_pretrained``: the
    step-aware UNet is not a component diffusers can save).
    """
    from diffusers import UNet2DModel

    current = _pipeline_unet(pipe)
    original = current.replaced if isinstance(current, StepAwareUNet) else current
    if supernet is None and isinstance(original, SlimmableUNet):
        supernet = original
    elif supernet is None:
        if not isinstance(original, UNet2DModel):
            raise ValueError(f"the pipeline's unet is a {type(original).__name__}; step-aware sampling converts a "
                             "diffusers UNet2DModel, or pass supernet=<a SlimmableUNet>")
        supernet = SlimmableUNet.from_dense(original, width_choices=schedule.width_choices)
    supernet = supernet.to(device=original.device, dtype=original.dtype).eval()
    adapter = StepAwareUNet(supernet, schedule, macs, replaced=original,
                            allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    pipe.unet = adapter  # DiffusionPipeline.__setattr__ also records the component's class in pipe.config
    return adapter


def disable_step_aware(pipe) -> Optional[torch.nn.Module]:
    """Put back the UNet :func:`enable_step_aware` replaced (moved to where the pipeline was moved meanwhile) and
    return it; a pipeline that is not step-aware is left as it is (a warning, as diffusers' ``disable_cache``)."""
    adapter = _pipeline_unet(pipe)
    if not isinstance(adapter, StepAwareUNet) or adapter.replaced is None:
        logger.warning("step-aware sampling is not enabled on this pipeline: nothing to disable")
        return None
    original = adapter.replaced
    if (original.device, original.dtype) != (adapter.device, adapter.dtype):
        original.to(device=adapter.device, dtype=adapter.dtype)
    pipe.unet = original
    return original
