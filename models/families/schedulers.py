"""Scheduler choice for every family: the model's own, or one of the common diffusers schedulers."""
from __future__ import annotations

from diffusers import (DDIMScheduler, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, LCMScheduler,
                       UniPCMultistepScheduler)

from ..checks import check_choice, fail
from .base import SchedulerChoice

FLOW = {SchedulerChoice.FLOW_EULER, SchedulerChoice.FLOW_UNIPC}
EPSILON = {SchedulerChoice.DDIM, SchedulerChoice.EULER, SchedulerChoice.LCM}


def make(model, choice: str, shift: float):
    check_choice("scheduler", choice, [c.value for c in SchedulerChoice])
    choice = SchedulerChoice(choice)
    base = model.default_scheduler
    if choice == SchedulerChoice.DEFAULT:
        sched = base.__class__.from_config(base.config)
        if shift > 0:
            if "shift" in sched.config:
                sched = sched.__class__.from_config(sched.config, shift=shift)
            elif "flow_shift" in sched.config:
                sched = sched.__class__.from_config(sched.config, flow_shift=shift)
        return sched
    if model.flow and choice not in FLOW:
        fail("scheduler", f"must be a flow-matching scheduler ({', '.join(c.value for c in FLOW)}) or default "
             f"for {model.name}", choice.value, "Pick flow_euler, flow_unipc or default.")
    if not model.flow and choice not in EPSILON:
        fail("scheduler", f"must be one of {', '.join(c.value for c in EPSILON)} or default for {model.name}",
             choice.value, "Pick ddim, euler, lcm or default.")
    cfg = dict(base.config)
    if choice == SchedulerChoice.FLOW_EULER:
        cur = cfg.get("shift", cfg.get("flow_shift", 1.0))
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=cfg.get("num_train_timesteps", 1000),
                                               shift=shift if shift > 0 else cur)
    if choice == SchedulerChoice.FLOW_UNIPC:
        cur = cfg.get("flow_shift", cfg.get("shift", 1.0))
        return UniPCMultistepScheduler(num_train_timesteps=cfg.get("num_train_timesteps", 1000),
                                       prediction_type="flow_prediction", use_flow_sigmas=True,
                                       flow_shift=shift if shift > 0 else cur)
    cls = {SchedulerChoice.DDIM: DDIMScheduler, SchedulerChoice.EULER: EulerDiscreteScheduler,
           SchedulerChoice.LCM: LCMScheduler}[choice]
    return cls.from_config(cfg)
