"""Adam with lazy (row-sparse) updates of the hash table.

A training step touches a small share of the table's rows, yet dense Adam reads and writes every
row's value and moments. :class:`LazyAdam` updates, in its groups marked ``lazy``, only the rows
whose gradient is non-zero this step (their moments and values; the step count, and so the bias
correction, is the parameter's); other groups get torch's Adam unchanged. The state has Adam's
keys and shapes, so checkpoints of either optimiser load into the other.

The row update runs in the fused C++ kernel when it is built (:mod:`birdnerf.field.fused`), else
in :func:`lazy_adam_reference`, its torch twin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from birdnerf.field.fused import fused_kernel


def lazy_adam_reference(
    param: Tensor,
    grad: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    step_size: float,
    beta1: float,
    beta2: float,
    eps: float,
    bias_correction2_sqrt: float,
) -> int:
    """One Adam step, in place, on the rows (first axis) of ``param`` whose gradient is not all
    zero; returns how many rows that was. Arithmetic of ``torch.optim.Adam`` (single tensor)."""
    hit = grad.reshape(grad.shape[0], -1).ne(0).any(dim=1).nonzero().squeeze(1)
    g = grad[hit]
    m = exp_avg[hit].lerp_(g, 1 - beta1)
    v = exp_avg_sq[hit].mul_(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
    exp_avg.index_copy_(0, hit, m)
    exp_avg_sq.index_copy_(0, hit, v)
    param.index_copy_(0, hit, param[hit].addcdiv_(m, denom, value=-step_size))
    return int(hit.numel())


def lazy_adam_rows(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, *args: float) -> int:
    """:func:`lazy_adam_reference`'s step through the fused kernel where it applies."""
    kernel = fused_kernel()
    tensors = (param, grad, exp_avg, exp_avg_sq)
    if (
        kernel is not None
        and param.dim() > 0
        and all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
        and len({t.dtype for t in tensors}) == 1
        and param.dtype in (torch.float32, torch.float64)
    ):
        return int(kernel.lazy_adam_step(*tensors, *args))
    return lazy_adam_reference(*tensors, *args)


class LazyAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose param groups with ``"lazy": True`` update only the rows hit.

    Lazy groups take neither weight decay, AMSGrad nor ``maximize``; ``step`` takes no closure.
    The ``lazy`` flags belong to the optimiser as built: :meth:`load_state_dict` keeps them, so a
    state saved by plain Adam loads too.
    """

    def __init__(self, params: Iterable[dict], **kwargs):
        super().__init__(params, **kwargs)
        for group in self.param_groups:
            group.setdefault("lazy", False)
            if group["lazy"] and (group["weight_decay"] or group["amsgrad"] or group["maximize"]):
                raise ValueError("lazy Adam groups take no weight decay, amsgrad or maximize")

    def load_state_dict(self, state_dict: dict) -> None:
        lazy = [group["lazy"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, flag in zip(self.param_groups, lazy, strict=True):
            group["lazy"] = flag

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("LazyAdam.step takes no closure")
        held = [
            (group, p, p.grad)
            for group in self.param_groups
            if group["lazy"]
            for p in group["params"]
            if p.grad is not None
        ]
        for _, p, _ in held:  # the dense step skips parameters without a gradient
            p.grad = None
        try:
            super().step()
        finally:
            for _, p, grad in held:
                p.grad = grad
        for group, p, grad in held:
            self._lazy_step(group, p, grad)
        return None

    def _lazy_step(self, group: dict, p: Tensor, grad: Tensor) -> None:
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        beta1, beta2 = (float(b) for b in group["betas"])
        step_size = float(group["lr"]) / (1 - beta1**step)
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        lazy_adam_rows(
            p,
            grad.contiguous(),
            state["exp_avg"],
            state["exp_avg_sq"],
            step_size,
            beta1,
            beta2,
            float(group["eps"]),
            bias_correction2_sqrt,
        )
