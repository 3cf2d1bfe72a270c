"""Pixel losses for fine-tuning: MSE (the classic choice), L1 and Charbonnier.

All take ``restored`` and ``gt`` of the same shape (NCHW float, [0, 1] scale) and return a
scalar mean over every element.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "LOSS_NAMES",
    "CharbonnierLoss",
    "L1Loss",
    "MSELoss",
    "build_loss",
    "charbonnier_loss",
    "l1_loss",
    "mse_loss",
]

LOSS_NAMES = ("mse", "l1", "charbonnier")


def _check_shapes(restored: Tensor, gt: Tensor) -> None:
    # Broadcasting a (N,C,H,W) against (C,H,W) would silently compute the wrong loss.
    if restored.shape != gt.shape:
        raise ValueError(f"restored and gt shapes differ: {tuple(restored.shape)} vs {tuple(gt.shape)}")


def mse_loss(restored: Tensor, gt: Tensor) -> Tensor:
    """Mean squared error over all elements (scalar)."""
    _check_shapes(restored, gt)
    return (restored - gt).pow(2).mean()


def l1_loss(restored: Tensor, gt: Tensor) -> Tensor:
    """Mean absolute error over all elements (scalar)."""
    _check_shapes(restored, gt)
    return (restored - gt).abs().mean()


def charbonnier_loss(restored: Tensor, gt: Tensor, eps: float = 1e-3) -> Tensor:
    """Charbonnier loss ``mean(sqrt((restored - gt)^2 + eps^2))`` (scalar).

    A differentiable L1: quadratic for errors below ``eps`` (so the gradient does not flip sign
    around 0), linear above. ``eps`` is on the [0, 1] image scale (1e-3 is a quarter of a gray
    level), > 0.
    """
    _check_shapes(restored, gt)
    if not eps > 0:
        raise ValueError(f"charbonnier eps must be > 0, got {eps!r}")
    return torch.sqrt((restored - gt).pow(2) + eps * eps).mean()


class MSELoss(nn.Module):
    """Module form of :func:`mse_loss`."""

    def forward(self, restored: Tensor, gt: Tensor) -> Tensor:
        return mse_loss(restored, gt)


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`."""

    def forward(self, restored: Tensor, gt: Tensor) -> Tensor:
        return l1_loss(restored, gt)


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"charbonnier eps must be > 0, got {eps!r}")
        self.eps = eps

    def forward(self, restored: Tensor, gt: Tensor) -> Tensor:
        return charbonnier_loss(restored, gt, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


def build_loss(name: str, *, charbonnier_eps: float = 1e-3) -> nn.Module:
    """The loss module called ``name``: "mse", "l1" or "charbonnier".

    ``charbonnier_eps`` applies to "charbonnier" only.
    """
    if name == "mse":
        return MSELoss()
    if name == "l1":
        return L1Loss()
    if name == "charbonnier":
        return CharbonnierLoss(charbonnier_eps)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSS_NAMES}")
