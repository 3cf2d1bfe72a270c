"""Self-supervised denoising losses: train on noisy images alone, no clean target.

Each loss takes ``net`` (a callable ``(N, C, H, W) -> (N, C, H, W)``, e.g. a denoiser) and
``noisy`` (NCHW float, [0, 1] scale) and returns a scalar to minimise. ``sigma`` is a ``(N,)``
tensor (or a float for the whole batch) of per-image noise std on the [0, 1] scale (a level of
70 on the 0-255 scale is ``70 / 255``).

What each assumes about the noise:

- :func:`sure_loss` (Monte-Carlo SURE): additive, zero-mean Gaussian noise, independent per pixel
  and channel, of known ``sigma``. It is then an unbiased estimate of the MSE against the clean
  image, computed on the real noisy input. A wrong ``sigma`` biases it (too low: the net learns to
  keep noise; too high: to oversmooth).
- :func:`recorrupted_loss` (Recorrupted-to-Recorrupted): the same Gaussian assumption and known
  ``sigma``; the net sees a noisier input (std ``sigma * sqrt(1 + alpha^2)``) than at test time.
- :func:`neighbor2neighbor_loss`: zero-mean noise independent between neighbouring pixels (any
  distribution, no ``sigma`` needed), and neighbouring pixels with near-equal clean values. With
  ``clip_sigma``: Gaussian noise of that std clipped to [0, 1], as an 8-bit file stores it.

Clipping: strong noise stored in a file is clipped to [0, 1] (at sigma 70 / 255, 13-47 % of a
photo's values are 0 or 255), which makes it non-Gaussian, of lower variance, and not zero-mean
(the values average to :func:`clipped_mean`, pulled towards mid-gray). SURE is then far off --
on CBSD68 crops at sigma 70 it reads -0.025 where the true MSE is 0.007, and training on it
wrecks the net -- and R2R's input and target noises are no longer independent. Only
:func:`neighbor2neighbor_loss` with ``clip_sigma`` models it.

Noise correlated between neighbouring pixels (demosaicing, JPEG, resampling) breaks all three: it
is indistinguishable from signal to these losses and is learnt as image content, so it stays in
the output. BatchNorm must not be in training mode: batch statistics couple the images of a batch
(SURE's divergence would then be taken through the other images too).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = [
    "SELF_SUPERVISED_LOSSES",
    "clipped_mean",
    "clipped_variance",
    "neighbor2neighbor_loss",
    "neighbor_subsample",
    "neighbour_error",
    "recorrupted_loss",
    "sure_loss",
]

Net = Callable[[Tensor], Tensor]


def _check_noisy(noisy: Tensor) -> None:
    if noisy.dim() != 4:
        raise ValueError(f"noisy must be NCHW, got shape {tuple(noisy.shape)}")
    if not noisy.is_floating_point():
        raise ValueError(f"noisy must be a float tensor on the [0, 1] scale, got {noisy.dtype}")


def _per_image_sigma(sigma: Tensor | float, noisy: Tensor) -> Tensor:
    """``sigma`` as an ``(N, 1, 1, 1)`` tensor matching ``noisy``; raises ValueError if invalid."""
    n = noisy.shape[0]
    s = torch.as_tensor(sigma, dtype=noisy.dtype, device=noisy.device)
    if s.dim() == 0:
        s = s.expand(n)
    if s.shape != (n,):
        raise ValueError(f"sigma must be a float or a ({n},) tensor, one per image, got shape {tuple(s.shape)}")
    if not (torch.isfinite(s).all() and (s > 0).all()):
        raise ValueError(f"sigma must be finite and > 0 (the [0, 1] scale), got {s.tolist()}")
    if (s > 1).any():
        raise ValueError(f"sigma must be on the [0, 1] scale (e.g. 70 / 255), got {s.tolist()}")
    return s.view(n, 1, 1, 1)


def _check_output(out: Tensor, noisy: Tensor) -> None:
    if out.shape != noisy.shape:
        raise ValueError(f"net output shape {tuple(out.shape)} differs from its input's {tuple(noisy.shape)}")


def sure_loss(net: Net, noisy: Tensor, sigma: Tensor | float, *, eps: float = 1e-3,
              generator: torch.Generator | None = None) -> Tensor:
    """Monte-Carlo SURE: an unbiased estimate of ``mean((net(noisy) - clean)^2)`` (scalar).

    Per image of ``M`` values: ``|f(y) - y|^2 / M - sigma^2 + 2 sigma^2 div / M``, with the
    divergence ``div = b . (f(y + eps b) - f(y)) / eps`` for one ``b ~ N(0, I)`` (Ramani, Blu &
    Unser 2008); the mean over the batch. Two forward passes, both differentiated.

    Assumes ``noisy = clean + n``, ``n`` zero-mean Gaussian, independent per value, std ``sigma``
    (known). Other noise biases the estimate; clipped noise badly (see the module notes).

    Args:
        net: the denoiser, ``(N, C, H, W) -> (N, C, H, W)``; images must not interact (no
            BatchNorm in training mode).
        noisy: ``(N, C, H, W)`` float, [0, 1] scale.
        sigma: noise std per image on the [0, 1] scale, ``(N,)`` tensor or a float.
        eps: finite-difference step on the [0, 1] scale, > 0.
        generator: draws ``b``, for determinism.
    """
    _check_noisy(noisy)
    s = _per_image_sigma(sigma, noisy)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    b = torch.randn(noisy.shape, generator=generator, dtype=noisy.dtype, device=noisy.device)
    out = net(noisy)
    _check_output(out, noisy)
    perturbed = net(noisy + eps * b)
    count = noisy[0].numel()
    fidelity = (out - noisy).pow(2).flatten(1).mean(1)
    divergence = (b * (perturbed - out)).flatten(1).sum(1) / eps
    variance = s.flatten().pow(2)
    return (fidelity - variance + 2 * variance * divergence / count).mean()


def recorrupted_loss(net: Net, noisy: Tensor, sigma: Tensor | float, *, alpha: float = 0.5,
                     generator: torch.Generator | None = None) -> Tensor:
    """Recorrupted-to-Recorrupted (Pang et al. 2021): ``mean((f(y + alpha sigma z) - (y - sigma / alpha z))^2)``.

    With ``z ~ N(0, I)`` the input's and the target's noises are independent, so in expectation the
    loss is the MSE against the clean image plus a constant -- for the noisier input of std
    ``sigma * sqrt(1 + alpha^2)``, not the test-time one (a small ``alpha`` narrows that gap but
    makes the target noisier, std ``sigma * sqrt(1 + 1 / alpha^2)``).

    Assumes zero-mean Gaussian noise, independent per value, of known ``sigma``.

    Args:
        net: the denoiser.
        noisy: ``(N, C, H, W)`` float, [0, 1] scale.
        sigma: noise std per image on the [0, 1] scale, ``(N,)`` tensor or a float.
        alpha: recorruption strength, > 0.
        generator: draws ``z``, for determinism.
    """
    _check_noisy(noisy)
    s = _per_image_sigma(sigma, noisy)
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha!r}")
    z = torch.randn(noisy.shape, generator=generator, dtype=noisy.dtype, device=noisy.device) * s
    out = net(noisy + alpha * z)
    _check_output(out, noisy)
    return (out - (noisy - z / alpha)).pow(2).mean()


def clipped_mean(clean: Tensor, sigma: Tensor | float) -> Tensor:
    """``E[clip(clean + sigma z, 0, 1)]``, ``z ~ N(0, 1)``: what a noisy file's values average to.

    Clipping biases the mean towards mid-gray: at ``sigma`` 70 / 255 a clean 0 averages to 0.11
    and a clean 1 to 0.89. Smooth and increasing in ``clean``; ``sigma`` as in :func:`sure_loss`
    for an NCHW ``clean``, a float otherwise.
    """
    return _clipped_mean_and_variance(clean, sigma)[0]


def clipped_variance(clean: Tensor, sigma: Tensor | float) -> Tensor:
    """``Var[clip(clean + sigma z, 0, 1)]``, ``z ~ N(0, 1)``: the variance a noisy file's values
    keep around :func:`clipped_mean` (below ``sigma^2`` near black and white). Same arguments."""
    return _clipped_mean_and_variance(clean, sigma)[1]


def _clipped_mean_and_variance(clean: Tensor, sigma: Tensor | float) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``clip(clean + sigma z, 0, 1)`` (arguments as :func:`clipped_mean`)."""
    s = _per_image_sigma(sigma, clean) if clean.dim() == 4 else torch.as_tensor(sigma, dtype=clean.dtype)
    low, high = -clean / s, (1 - clean) / s
    below, inside = torch.special.ndtr(low), torch.special.ndtr(high)
    density_low, density_high = _normal_density(low), _normal_density(high)
    mean = (1 - inside) + clean * (inside - below) + s * (density_low - density_high)
    second = ((clean * clean + s * s) * (inside - below) + 2 * clean * s * (density_low - density_high)
              + s * s * (low * density_low - high * density_high) + (1 - inside))
    return mean, (second - mean * mean).clamp_min(0)


def neighbour_error(restore: Net, noisy: Tensor, sigma: Tensor | float | None, *, clipped: bool = True,
                    generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Held-out Neighbor2Neighbor error of ``restore`` on noisy images alone, per image
    (``(N,)`` each, [0, 1] scale squared): one :func:`neighbor_subsample` draw; ``restore`` of the
    first sub-image is compared with its neighbours in the second (as :func:`clipped_mean` with
    ``clipped``), and the variance those neighbours' noise has around it (``sigma^2``, or the
    :func:`clipped_variance`). The first less the second estimates the model's squared error
    against the clean image at half resolution, plus the neighbours' own differences (fine
    texture, the same for every model). The variance depends on the output it is taken at: to
    compare models, subtract one model's variance from every model's error (the first is then
    what tells them apart). ``sigma`` None: unclipped noise of unknown level (variance 0).
    Assumes what :func:`neighbor2neighbor_loss` assumes."""
    _check_noisy(noisy)
    first, second = neighbor_subsample(noisy, generator=generator)
    out = restore(first)
    _check_output(out, first)
    if sigma is None:
        return (out - second).pow(2).flatten(1).mean(1), torch.zeros(noisy.shape[0], device=noisy.device)
    s = _per_image_sigma(sigma, noisy)
    if clipped:
        expected, spread = _clipped_mean_and_variance(out, s.flatten())
    else:
        expected, spread = out, s.pow(2).expand_as(out)
    return (expected - second).pow(2).flatten(1).mean(1), spread.flatten(1).mean(1)


def _normal_density(u: Tensor) -> Tensor:
    return torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)


def neighbor_subsample(image: Tensor, *, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Neighbor2Neighbor's pair of sub-images of ``image`` (N, C, H, W), each (N, C, H/2, W/2).

    In every 2 x 2 cell one random pair of neighbouring pixels (sharing an edge) is drawn; the
    first goes to ``g1``, the second to ``g2``. The same pixels are taken in every channel. An odd
    last row or column is dropped. Call twice with generators in the same state to get the same
    sampling (e.g. for the network's output and its input).
    """
    if image.dim() != 4:
        raise ValueError(f"image must be NCHW, got shape {tuple(image.shape)}")
    n, c, h, w = image.shape
    if h < 2 or w < 2:
        raise ValueError(f"image must be at least 2 x 2 to sub-sample, got {h} x {w}")
    h2, w2 = h // 2, w // 2
    # Cell positions 0 1 / 2 3; the 8 ordered pairs of edge neighbours.
    pairs = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 0], [1, 3], [3, 1], [2, 3], [3, 2]], device=image.device)
    choice = torch.randint(0, 8, (n, h2, w2), generator=generator, device="cpu").to(image.device)
    first, second = pairs[choice, 0], pairs[choice, 1]
    cells = image[:, :, : 2 * h2, : 2 * w2].reshape(n, c, h2, 2, w2, 2).permute(0, 1, 2, 4, 3, 5)
    cells = cells.reshape(n, c, h2, w2, 4)

    def gather(index: Tensor) -> Tensor:
        return cells.gather(4, index.view(n, 1, h2, w2, 1).expand(n, c, h2, w2, 1)).squeeze(4)

    return gather(first), gather(second)


def neighbor2neighbor_loss(net: Net, noisy: Tensor, *, gamma: float = 2.0, clip_sigma: Tensor | float | None = None,
                           generator: torch.Generator | None = None) -> Tensor:
    """Neighbor2Neighbor (Huang et al. 2021) with its regulariser (scalar).

    ``|f(g1(y)) - g2(y)|^2 + gamma |f(g1(y)) - g2(y) - (g1(f(y)) - g2(f(y)))|^2`` (means), with
    ``f(y)`` computed without gradient and ``g1, g2`` one :func:`neighbor_subsample` draw.

    Assumes zero-mean noise independent between neighbouring pixels (any distribution, unknown
    level) and neighbouring clean pixels of near-equal value: the net learns at half resolution,
    so fine texture differing between neighbours is partly read as noise. Noise clipped to
    [0, 1] (any 8-bit file of strong noise) is not zero-mean: the net then learns the clipped
    mean, too bright in the dark and too dark in the light, unless ``clip_sigma`` is given.

    Args:
        net: the denoiser.
        noisy: ``(N, C, H, W)`` float, [0, 1] scale, H and W >= 2.
        gamma: weight of the regulariser, >= 0 (the paper uses 2 with 1 at the end of training).
        clip_sigma: the noise is Gaussian of this std (``(N,)`` or a float, [0, 1] scale) clipped
            to [0, 1]: every output ``f`` is compared as :func:`clipped_mean` ``(f, clip_sigma)``,
            the value the noisy pixels average to, so that ``f`` itself learns the clean image.
        generator: draws the sub-sampling, for determinism.
    """
    _check_noisy(noisy)
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    if clip_sigma is not None:
        s = _per_image_sigma(clip_sigma, noisy).flatten()
        denoiser = net

        def net(x: Tensor) -> Tensor:  # the denoiser seen through the clipping
            return clipped_mean(denoiser(x), s)

    # One draw, applied to both the input and the (no-gradient) output.
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    g1, g2 = neighbor_subsample(noisy, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        full = net(noisy)
        _check_output(full, noisy)
        f1, f2 = neighbor_subsample(full, generator=torch.Generator().manual_seed(seed))
    out = net(g1)
    _check_output(out, g1)
    difference = out - g2
    return difference.pow(2).mean() + gamma * (difference - (f1 - f2)).pow(2).mean()


SELF_SUPERVISED_LOSSES: dict[str, Callable[..., Tensor]] = {
    "sure": sure_loss,
    "neighbor2neighbor": neighbor2neighbor_loss,
    "recorrupted": recorrupted_loss,
}
"""The losses by name; "neighbor2neighbor" takes no ``sigma`` (its ``clip_sigma`` is optional)."""
