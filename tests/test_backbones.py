"""Backbones: ImageNet weights load right, and every backbone honours the feature contract."""

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from restoration.models.backbones import (
    BACKBONES,
    LITE0_MEAN,
    LITE0_STD,
    build_backbone,
    build_efficientnet_lite0_classifier,
)


def _classify(net, image) -> int:
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor(LITE0_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE0_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return int(net(x).argmax())


def test_pretrained_efficientnet_lite0_classifies_sample_photos():
    net = build_efficientnet_lite0_classifier(weights="imagenet")
    assert _classify(net, data.chelsea()) == 285  # Egyptian cat
    assert _classify(net, data.coffee()) == 967  # espresso


def test_random_efficientnet_lite0_does_not():
    torch.manual_seed(0)
    net = build_efficientnet_lite0_classifier(weights=None)
    assert (_classify(net, data.chelsea()), _classify(net, data.coffee())) != (285, 967)


@pytest.mark.parametrize("name", BACKBONES)
def test_feature_contract(name):
    # torchvision backbones are built without weights here (offline); the contract is the same.
    backbone = build_backbone(name, weights="imagenet" if name == "efficientnet_lite0" else None)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        features = backbone(x)
    assert len(features) == len(backbone.strides) == len(backbone.out_channels)
    for feature, stride, channels in zip(features, backbone.strides, backbone.out_channels):
        assert feature.shape == (1, channels, 64 // stride, 96 // stride)


def test_weights_file_is_loaded(tmp_path):
    import torchvision  # a declared dependency (pyproject.toml): missing is a broken install, not a skip
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("resnet18", weights=str(path))
    assert torch.equal(backbone.stages[0][0].weight, reference.conv1.weight)


def test_bad_backbone_and_weights_are_named():
    with pytest.raises(ValueError, match="unknown backbone 'resnet99'.*efficientnet_lite0"):
        build_backbone("resnet99")
    with pytest.raises(ValueError, match="unknown weights 'NoSuch_Weights.X'"):
        build_backbone("resnet18", weights="NoSuch_Weights.X")
    with pytest.raises(FileNotFoundError):
        build_backbone("efficientnet_lite0", weights="/nonexistent/weights.pth")
