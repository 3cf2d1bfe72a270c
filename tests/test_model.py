"""The fused model: every task, any size, fusion, freezing and parameter groups."""

import pytest
import torch

from restoration.models.fused import FusedRestorationNet, ModelConfig, build_model

SMALL = (8, 8, 16, 16, 24, 24)


def _randomize_head(model: FusedRestorationNet) -> None:
    # The head starts at zero (identity); give it weights so outputs depend on the whole network.
    torch.manual_seed(0)
    torch.nn.init.normal_(model.head.weight, std=0.01)


@pytest.mark.parametrize(
    "task,scale",
    [("denoise", 1), ("deblur", 1), ("jpeg", 1), ("sr", 2), ("sr", 4), ("inpaint", 1)],
)
@pytest.mark.parametrize("size", [(33, 47), (64, 64)])
def test_every_task_any_size(task, scale, size):
    model = build_model(ModelConfig(task=task, scale=scale, widths=SMALL)).eval()
    _randomize_head(model)
    lq = torch.rand(2, 3, *size)
    mask = (torch.rand(2, 1, *size) > 0.5).float() if task == "inpaint" else None
    with torch.no_grad():
        out = model(lq, mask)
    assert out.shape == (2, 3, size[0] * scale, size[1] * scale)
    assert torch.isfinite(out).all()
    if task == "inpaint":
        known = (1 - mask).bool().expand_as(out)
        assert torch.equal(out[known], lq[known])  # known pixels pass through exactly


def test_the_fused_model_is_a_restoration_model():
    from restoration.models.interface import RestorationModel

    model = build_model(ModelConfig(widths=SMALL, alpha=0.3), backbone_weights=None)
    assert isinstance(model, RestorationModel) and model.model_id is None
    assert model.describe() == {"alpha": model.alphas()}
    assert model.traits.architecture == "fused-efficientnet_lite0" and model.traits.fixed_task
    state = model.export_state_dict()
    assert set(state) == set(model.state_dict())
    other = build_model(ModelConfig(widths=SMALL, alpha=0.7), backbone_weights=None)
    other.load_export_state_dict(state)
    assert other.alphas() == model.alphas()


def test_untrained_model_is_identity():
    model = build_model(ModelConfig(widths=SMALL)).eval()
    lq = torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(model(lq), lq)


def test_fusion_alpha_fixed_and_learned():
    fixed = build_model(ModelConfig(widths=SMALL, alpha=0.3, learn_alpha=False))
    assert set(fixed.alphas()) == {"2", "4", "8", "16"}
    assert all(abs(a - 0.3) < 1e-6 for a in fixed.alphas().values())
    assert not any("alpha" in n for n, _ in fixed.named_parameters())
    learned = build_model(ModelConfig(widths=SMALL, alpha=0.5, learn_alpha=True))
    assert sum("alpha_logit" in n for n, _ in learned.named_parameters()) == 4


def test_alpha_zero_ignores_pretrained_branch():
    model = build_model(ModelConfig(widths=SMALL, alpha=0.0, learn_alpha=False)).eval()
    _randomize_head(model)
    lq = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        before = model(lq)
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))
        after = model(lq)
    assert torch.allclose(before, after)


def test_freeze_and_parameter_groups():
    model = build_model(ModelConfig(widths=SMALL))
    model.freeze_backbone(True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    model.freeze_backbone(False)
    assert all(p.requires_grad for p in model.backbone.parameters())
    groups = {g["name"]: g for g in model.parameter_groups(lr=1e-3, backbone_lr=1e-4, weight_decay=0.01)}
    assert groups["backbone"]["lr"] == 1e-4 and groups["target"]["lr"] == 1e-3
    assert groups["alpha"]["weight_decay"] == 0.0
    total = sum(len(g["params"]) for g in groups.values())
    assert total == len(list(model.parameters()))
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone_ids


def test_backbone_batchnorm_stays_in_eval_mode():
    model = build_model(ModelConfig(widths=SMALL)).train()
    assert model.encoder.training and not model.backbone.training


def test_bad_configs_are_named():
    with pytest.raises(ValueError, match="unknown task 'colorize'"):
        ModelConfig(task="colorize")
    with pytest.raises(ValueError, match="scale must be 2, 3 or 4"):
        ModelConfig(task="sr", scale=8)
    with pytest.raises(ValueError, match="alpha must be in"):
        ModelConfig(alpha=1.5)
    model = build_model(ModelConfig(task="inpaint", widths=SMALL))
    with pytest.raises(ValueError, match="needs a mask"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected lq of shape \(N, 3, H, W\)"):
        model(torch.rand(3, 32, 32))


def test_backbone_is_cut_after_the_deepest_fused_stride():
    model = build_model(ModelConfig(widths=SMALL, fuse_strides=(2, 4)), backbone_weights=None)
    assert model.backbone.strides == (2, 4) and set(model.alphas()) == {"2", "4"}
    # ConvNeXt has no stride-2 feature: fusion happens where both exist.
    convnext = build_model(ModelConfig(backbone="convnext_tiny", widths=SMALL), backbone_weights=None)
    assert set(convnext.alphas()) == {"4", "8", "16"}
    with pytest.raises(ValueError, match="none of fuse_strides"):
        build_model(ModelConfig(backbone="convnext_tiny", widths=SMALL, fuse_strides=(2,)), backbone_weights=None)
    with pytest.raises(ValueError, match="fuse_strides must be"):
        ModelConfig(fuse_strides=(3,))
