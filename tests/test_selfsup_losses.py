"""Self-supervised losses: SURE against the true MSE, N2N's sub-sampler, gradients, validation."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from restoration.finetune.selfsup import (
    SELF_SUPERVISED_LOSSES,
    clipped_mean,
    neighbor2neighbor_loss,
    neighbor_subsample,
    recorrupted_loss,
    sure_loss,
)

SIGMA = 0.1


def _clean(n: int = 4, size: int = 64) -> Tensor:
    """Smooth synthetic colour images in [0.2, 0.8] (no clipping at SIGMA)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    images = []
    for k in range(n):
        channels = [0.5 + 0.3 * torch.sin(2 * torch.pi * ((k + 1) * xs + c * ys) / 2) for c in range(3)]
        images.append(torch.stack(channels))
    return torch.stack(images)


def _noisy(clean: Tensor, seed: int = 0) -> Tensor:
    return clean + SIGMA * torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))


def _box_blur(x: Tensor) -> Tensor:
    weight = torch.full((3, 1, 3, 3), 1 / 9)
    return nn.functional.conv2d(nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), weight, groups=3)


def _true_mse(net, clean: Tensor, noisy: Tensor) -> float:
    return float((net(noisy) - clean).pow(2).mean())


def test_sure_of_identity_is_the_noise_variance() -> None:
    clean = _clean()
    noisy = _noisy(clean)
    sure = float(sure_loss(lambda x: x, noisy, torch.full((4,), SIGMA), generator=torch.Generator().manual_seed(1)))
    assert sure == pytest.approx(_true_mse(lambda x: x, clean, noisy), rel=0.05)
    assert sure == pytest.approx(SIGMA**2, rel=0.05)


def test_sure_of_a_box_blur_matches_its_true_mse() -> None:
    clean = _clean()
    noisy = _noisy(clean, seed=2)
    true = _true_mse(_box_blur, clean, noisy)
    sure = float(sure_loss(_box_blur, noisy, SIGMA, generator=torch.Generator().manual_seed(3)))
    # Without the divergence term the estimate would be about 8/9 sigma^2 too low.
    assert sure == pytest.approx(true, rel=0.1)
    assert sure < 0.5 * SIGMA**2  # the blur does remove most of the noise, and SURE sees it


def test_sure_with_a_wrong_sigma_is_off() -> None:
    clean = _clean()
    noisy = _noisy(clean, seed=2)
    wrong = float(sure_loss(_box_blur, noisy, 2 * SIGMA, generator=torch.Generator().manual_seed(3)))
    # Twice the true sigma: the -sigma^2 and divergence terms no longer cancel the noise's share.
    assert abs(wrong - _true_mse(_box_blur, clean, noisy)) > 2 * SIGMA**2


def test_recorrupted_and_n2n_on_identity() -> None:
    clean = _clean()
    noisy = _noisy(clean, seed=4)
    alpha = 0.5
    r2r = float(recorrupted_loss(lambda x: x, noisy, SIGMA, alpha=alpha, generator=torch.Generator().manual_seed(5)))
    assert r2r == pytest.approx((SIGMA * (alpha + 1 / alpha)) ** 2, rel=0.05)
    flat = torch.full((4, 3, 64, 64), 0.5)
    n2n = float(neighbor2neighbor_loss(lambda x: x, _noisy(flat), generator=torch.Generator().manual_seed(6)))
    assert n2n == pytest.approx(2 * SIGMA**2, rel=0.05)  # the regulariser is 0 for the identity


def test_clipped_mean_matches_clipped_samples() -> None:
    clean = torch.tensor([0.0, 0.1, 0.5, 0.9, 1.0])
    sigma = 70 / 255
    z = torch.randn(200_000, 1, generator=torch.Generator().manual_seed(0))
    sampled = (clean + sigma * z).clamp(0, 1).mean(0)
    assert torch.allclose(clipped_mean(clean, sigma), sampled, atol=2e-3)
    assert float(clipped_mean(torch.tensor(0.0), sigma)) == pytest.approx(0.1095, abs=1e-3)


def test_clip_aware_n2n_prefers_the_clean_value_to_the_clipped_mean() -> None:
    sigma = 70 / 255
    flat = torch.full((4, 3, 64, 64), 0.9)
    noisy = _noisy(flat).sub(0.9).mul(sigma / SIGMA).add(0.9).clamp(0, 1)
    biased = float(clipped_mean(torch.tensor(0.9), sigma))

    def loss(value: float, **kwargs) -> float:
        net = lambda x: torch.full_like(x, value)
        return float(neighbor2neighbor_loss(net, noisy, generator=torch.Generator().manual_seed(1), **kwargs))

    assert loss(biased) < loss(0.9)  # plain N2N learns the clipped mean ...
    assert loss(0.9, clip_sigma=sigma) < loss(biased, clip_sigma=sigma)  # ... clip-aware the clean value


def test_neighbor_subsample_takes_edge_neighbours_of_each_cell() -> None:
    h, w = 10, 13
    rows, cols = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    image = torch.stack([rows, cols, rows * w + cols]).expand(2, 3, h, w)
    g1, g2 = neighbor_subsample(image, generator=torch.Generator().manual_seed(0))
    assert g1.shape == g2.shape == (2, 3, 5, 6)
    cell_rows, cell_cols = torch.meshgrid(torch.arange(5).float(), torch.arange(6).float(), indexing="ij")
    for g in (g1, g2):
        assert torch.equal(torch.div(g[:, 0], 2, rounding_mode="floor"), cell_rows.expand(2, 5, 6))
        assert torch.equal(torch.div(g[:, 1], 2, rounding_mode="floor"), cell_cols.expand(2, 5, 6))
        assert torch.equal(g[:, 2], g[:, 0] * w + g[:, 1])  # same pixel in every channel
    distance = (g1[:, 0] - g2[:, 0]).abs() + (g1[:, 1] - g2[:, 1]).abs()
    assert torch.all(distance == 1)
    # Both directions and both orders occur.
    assert (g1[:, 0] != g2[:, 0]).any() and (g1[:, 1] != g2[:, 1]).any()
    again = neighbor_subsample(image, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], g1) and torch.equal(again[1], g2)


@pytest.mark.parametrize("name", sorted(SELF_SUPERVISED_LOSSES))
def test_gradients_reach_the_weights(name: str) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    noisy = _noisy(_clean(2, 32))
    args = () if name == "neighbor2neighbor" else (torch.full((2,), SIGMA),)
    loss = SELF_SUPERVISED_LOSSES[name](net, noisy, *args, generator=torch.Generator().manual_seed(1))
    loss.backward()
    for p in net.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    again = SELF_SUPERVISED_LOSSES[name](net, noisy, *args, generator=torch.Generator().manual_seed(1))
    assert again.item() == loss.item()


def test_invalid_inputs_raise() -> None:
    noisy = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="sigma must be a float or a \\(2,\\) tensor"):
        sure_loss(lambda x: x, noisy, torch.full((3,), SIGMA))
    with pytest.raises(ValueError, match="\\[0, 1\\] scale"):
        sure_loss(lambda x: x, noisy, 70.0)
    with pytest.raises(ValueError, match="> 0"):
        recorrupted_loss(lambda x: x, noisy, torch.tensor([SIGMA, 0.0]))
    with pytest.raises(ValueError, match="NCHW"):
        sure_loss(lambda x: x, noisy[0], SIGMA)
    with pytest.raises(ValueError, match="alpha"):
        recorrupted_loss(lambda x: x, noisy, SIGMA, alpha=0)
    with pytest.raises(ValueError, match="output shape"):
        sure_loss(lambda x: x[..., :8, :8], noisy, SIGMA)
    with pytest.raises(ValueError, match="at least 2 x 2"):
        neighbor2neighbor_loss(lambda x: x, torch.rand(1, 3, 1, 8))
