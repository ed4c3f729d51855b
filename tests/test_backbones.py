"""Backbones by name: built-in specs and any torchvision classification model."""

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from sklearn_ben import BENClassifier
from sklearn_ben.backbones import (
    ResNet,
    TorchvisionModel,
    backbone_names,
    check_backbone,
    strip_classifier,
)


def _images(n=32, channels=5, size=32):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, channels, size, size)).astype(np.float32)
    return X, np.arange(n) % 2, np.repeat(["a", "b"], n // 2)


@pytest.mark.parametrize(
    "name", ["mobilenet_v3_small", "shufflenet_v2_x0_5", "regnet_x_400mf"]
)
def test_backbones_torchvision_names_train_on_any_channel_count(name):
    X, y, groups = _images()
    clf = BENClassifier(module=name, max_epochs=1, batch_size=8, random_state=0)
    clf.fit(X, y, groups=groups)
    assert clf.predict_proba(X, groups=groups).shape == (32, 2)
    assert isinstance(clf.module, str)  # the parameter is left as given


@pytest.mark.parametrize(
    "name, n_features",
    [("efficientnet_b0", 1280), ("mobilenet_v3_small", 1024), ("densenet121", 1024)],
)
def test_backbones_torchvision_model_drops_its_classifier(name, n_features):
    net = TorchvisionModel(name=name).build(7).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 7, 32, 32)).shape == (2, n_features)


@pytest.mark.parametrize("name", ["resnet34", "resnet101"])
def test_backbones_resnet_depths_by_name(name):
    clf = BENClassifier(module=name).set_params(module__zero_init_residual=True)
    assert isinstance(clf.module, ResNet)
    assert clf.module.depth == int(name[6:])


def test_backbones_other_torchvision_names_tune_by_name():
    clf = BENClassifier(module="efficientnet_b0").set_params(
        module__name="efficientnet_b1"
    )
    assert isinstance(clf.module, TorchvisionModel)
    assert clf.module.name == "efficientnet_b1"


def test_backbones_names_cover_torchvision_classification_models():
    names = backbone_names()
    assert {"cnn", "mlp", "resnet34", "efficientnet_b0", "vit_b_16"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names  # detection is not a backbone


@pytest.mark.parametrize(
    "name, found",
    [
        ("vit_b_16", "LayerNorm"),
        ("convnext_tiny", "LayerNorm2d"),
        ("squeezenet1_0", "no normalisation layers"),
    ],
)
def test_backbones_without_batchnorm_are_refused_under_ben(name, found):
    with pytest.raises(
        ValueError,
        match=f"torchvision model '{name}' has no BatchNorm layers \\(it has .*{found}",
    ):
        BENClassifier(module=name).fit(*_images()[:2], groups=_images()[2])
    check_backbone(name, needs_batchnorm=False)  # norm="frozen" accepts it


def test_backbones_unknown_name_is_a_parameter_error():
    with pytest.raises(ValueError, match="The 'module' parameter of BENClassifier"):
        BENClassifier(module="resnet-18").fit(*_images()[:2], groups=_images()[2])


def test_backbones_user_classifier_warns():
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(5, 64, 7, 2, 3, bias=False)
    X, y, groups = _images(n=16)
    clf = BENClassifier(module=net, max_epochs=1, batch_size=8, random_state=0)
    with pytest.warns(
        UserWarning, match=r"module ends with a Linear layer \(fc: 512 -> 10\)"
    ):
        clf.fit(X, y, groups=groups)


def test_backbones_strip_classifier_removes_the_warning_and_the_head():
    net = strip_classifier(torchvision.models.resnet18(weights=None))
    assert isinstance(net.fc, nn.Identity)
    with pytest.raises(ValueError, match="has no Linear layer to remove"):
        strip_classifier(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_backbones_fine_tuning_keeps_frozen_layers(tmp_path):
    # A user's weights (saved here; in practice a pretrained checkpoint).
    source = torchvision.models.resnet18(weights=None)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    net = torchvision.models.resnet18(weights=None)
    net.load_state_dict(torch.load(tmp_path / "weights.pt"))
    strip_classifier(net)
    for param in net.parameters():
        param.requires_grad = False
    for param in net.layer4.parameters():
        param.requires_grad = True
    X, y, groups = _images(n=16, channels=3)
    clf = BENClassifier(module=net, max_epochs=1, batch_size=8, random_state=0)
    clf.fit(X, y, groups=groups)
    trained = clf.net_.module_.backbone
    torch.testing.assert_close(trained.conv1.weight, source.conv1.weight)
    assert not torch.equal(
        trained.layer4[0].conv1.weight, source.layer4[0].conv1.weight
    )
