"""Built-in backbones: networks that map a batch to features of shape (N, D).

Each backbone is a small specification object with scikit-learn's
``get_params``/``set_params``, so that its hyper-parameters can be tuned
through the estimator: ``BENClassifier(module=SmallCNN()).set_params(
module__width=32)`` or ``GridSearchCV(..., {"module__width": [16, 32]})``.
Its ``build(n_inputs)`` method returns a fresh ``torch.nn.Module``.

Any torchvision classification model is a backbone by name
(:func:`torchvision.models.list_models`): :class:`TorchvisionModel` builds it
without weights, removes its classification layer and adapts its first
convolution to the number of channels.
"""

import functools
import warnings
from numbers import Integral, Real

import torch
import torchvision
from sklearn.base import BaseEstimator
from torch import nn

from sklearn_ben._sklearn_compat import Interval, Options, StrOptions

__all__ = [
    "MLP",
    "SmallCNN",
    "ResNet",
    "TorchvisionModel",
    "resolve_backbone",
    "strip_classifier",
    "BACKBONES",
]


class _Backbone(BaseEstimator):
    """A specification of a network; ``build`` makes the module."""

    #: "images" (N, C, H, W) or "features" (N, F)
    input_kind = "images"

    def build(self, n_inputs: int) -> nn.Module:  # pragma: no cover - abstract
        raise NotImplementedError

    def _validate(self):
        self._validate_params()


class MLP(_Backbone):
    """A multi-layer perceptron with batch normalisation, for feature tables.

    Each hidden layer is ``Linear -> BatchNorm1d -> ReLU (-> Dropout)``.

    Parameters
    ----------
    hidden_units : int, default=128
        Width of every hidden layer; also the feature dimension D.
    n_layers : int, default=2
        Number of hidden layers.
    dropout : float, default=0.0
        Dropout probability after each hidden layer.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ben.backbones import MLP
    >>> MLP(hidden_units=16).build(5)(torch.randn(4, 5)).shape
    torch.Size([4, 16])
    """

    input_kind = "features"
    _parameter_constraints = {
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "n_layers": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(self, *, hidden_units=128, n_layers=2, dropout=0.0):
        self.hidden_units = hidden_units
        self.n_layers = n_layers
        self.dropout = dropout

    def build(self, n_inputs: int) -> nn.Module:
        self._validate()
        layers: list[nn.Module] = []
        width = n_inputs
        for _ in range(self.n_layers):
            layers += [
                nn.Linear(width, self.hidden_units),
                nn.BatchNorm1d(self.hidden_units),
                nn.ReLU(inplace=True),
            ]
            if self.dropout > 0:
                layers.append(nn.Dropout(self.dropout))
            width = self.hidden_units
        return nn.Sequential(*layers)


class SmallCNN(_Backbone):
    """A small convolutional network for CPU-sized images.

    ``n_blocks`` blocks of ``Conv3x3 -> BatchNorm2d -> ReLU -> MaxPool2``, the
    width doubling at each block, then global average pooling.

    Parameters
    ----------
    width : int, default=16
        Channels of the first block; the feature dimension is
        ``width * 2 ** (n_blocks - 1)``.
    n_blocks : int, default=3
        Number of convolutional blocks.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ben.backbones import SmallCNN
    >>> SmallCNN(width=8, n_blocks=2).build(5)(torch.randn(2, 5, 32, 32)).shape
    torch.Size([2, 16])
    """

    _parameter_constraints = {
        "width": [Interval(Integral, 1, None, closed="left")],
        "n_blocks": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, width=16, n_blocks=3):
        self.width = width
        self.n_blocks = n_blocks

    def build(self, n_inputs: int) -> nn.Module:
        self._validate()
        layers: list[nn.Module] = []
        c_in, c_out = n_inputs, self.width
        for _ in range(self.n_blocks):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            c_in, c_out = c_out, c_out * 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        return nn.Sequential(*layers)


class ResNet(_Backbone):
    """A torchvision ResNet, randomly initialised, for any number of channels.

    The first convolution takes ``n_inputs`` channels; the classification
    layer is removed, so the output is the pooled feature vector (512
    dimensions for depths 18 and 34, 2048 for 50 and 101). No pretrained
    weights are loaded (none can be downloaded here, and ImageNet weights
    are made for three-channel photographs).

    Parameters
    ----------
    depth : {18, 34, 50, 101}, default=50
        Which ResNet.
    zero_init_residual : bool, default=False
        Zero-initialise the last batch-norm layer of each residual block.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ben.backbones import ResNet
    >>> ResNet(depth=18).build(5)(torch.randn(2, 5, 64, 64)).shape
    torch.Size([2, 512])
    """

    _parameter_constraints = {
        "depth": [Options(Integral, {18, 34, 50, 101})],
        "zero_init_residual": ["boolean"],
    }
    _DEPTHS = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101"}

    def __init__(self, *, depth=50, zero_init_residual=False):
        self.depth = depth
        self.zero_init_residual = zero_init_residual

    def build(self, n_inputs: int) -> nn.Module:
        self._validate()
        factory = getattr(torchvision.models, self._DEPTHS[self.depth])
        net = factory(weights=None, zero_init_residual=self.zero_init_residual)
        old = net.conv1
        net.conv1 = nn.Conv2d(
            n_inputs,
            old.out_channels,
            kernel_size=old.kernel_size,
            stride=old.stride,
            padding=old.padding,
            bias=False,
        )
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.fc = nn.Identity()
        return net


@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    """Classification models of torchvision (not detection, video...)."""
    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


# Models whose auxiliary classifiers change the training output.
_BUILD_KWARGS = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}


class TorchvisionModel(_Backbone):
    """Any torchvision classification model, as a backbone for any channels.

    The model is built without weights; its last ``Linear`` layer (the
    classifier) becomes ``nn.Identity``, so the output is the feature vector
    before it; its first convolution is replaced by one taking ``n_inputs``
    channels (same kernel, stride and padding, Kaiming-initialised).

    Parameters
    ----------
    name : str, default="resnet18"
        A name from ``torchvision.models.list_models(module=torchvision.models)``,
        e.g. ``"efficientnet_b0"``, ``"mobilenet_v3_small"``, ``"regnet_x_400mf"``.
        Under BEN (``norm="group"`` or ``"controls"``) the model needs
        BatchNorm layers: ViT, Swin, ConvNeXt (LayerNorm) and VGG without
        ``_bn``, AlexNet, SqueezeNet (no normalisation) are refused.

    See Also
    --------
    strip_classifier : The head removal, for your own torchvision model.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ben.backbones import TorchvisionModel
    >>> net = TorchvisionModel(name="mobilenet_v3_small").build(5)
    >>> net.eval()(torch.randn(2, 5, 32, 32)).shape
    torch.Size([2, 1024])
    """

    _parameter_constraints = {"name": [StrOptions(set(_torchvision_names()))]}

    def __init__(self, *, name="resnet18"):
        self.name = name

    def build(self, n_inputs: int) -> nn.Module:
        self._validate()
        net = torchvision.models.get_model(
            self.name, weights=None, **_BUILD_KWARGS.get(self.name, {})
        )
        strip_classifier(net)
        _adapt_first_conv(net, n_inputs)
        return net


def strip_classifier(model: nn.Module) -> nn.Module:
    """Replace the last ``Linear`` layer of ``model`` by ``nn.Identity``.

    For torchvision classification models this is the classifier (``fc``,
    ``classifier[-1]``, ``head``...), so the model then returns its features.
    Use it on your own (e.g. pretrained) model before passing it as
    ``module=``: the estimators add their own head.

    Parameters
    ----------
    model : torch.nn.Module
        Changed in place.

    Returns
    -------
    model : torch.nn.Module
        The same model.

    Examples
    --------
    >>> import torchvision
    >>> from sklearn_ben.backbones import strip_classifier
    >>> net = strip_classifier(torchvision.models.resnet18(weights=None))
    >>> net.fc
    Identity()
    """
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(model).__name__} has no Linear layer to remove; pass a "
            "network that ends with its classifier, or use it as it is."
        )
    _replace(model, linears[-1], nn.Identity())
    return model


def _replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


def _adapt_first_conv(model: nn.Module, n_inputs: int) -> None:
    path, old = next(
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)
    )
    if old.in_channels == n_inputs:
        return
    new = nn.Conv2d(
        n_inputs,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    if new.bias is not None:
        nn.init.zeros_(new.bias)
    _replace(model, path, new)


@functools.cache
def _norm_layers(name: str) -> tuple[str, ...]:
    """Class names of the normalisation layers of a torchvision model.

    Built on the meta device where the model allows it (no memory, no
    weights, milliseconds), else on the CPU.
    """
    kwargs = _BUILD_KWARGS.get(name, {})
    try:
        with torch.device("meta"):
            net = torchvision.models.get_model(name, weights=None, **kwargs)
    except (NotImplementedError, RuntimeError):  # an init that reads values
        net = torchvision.models.get_model(name, weights=None, **kwargs)
    return tuple(
        sorted({type(m).__name__ for m in net.modules() if "Norm" in type(m).__name__})
    )


def check_backbone(module, *, needs_batchnorm: bool) -> None:
    """Refuse, before any work, a torchvision model BEN cannot act on.

    Parameters
    ----------
    module : str, backbone or torch.nn.Module
        The ``module`` parameter.
    needs_batchnorm : bool
        Whether the ``norm`` in use acts through BatchNorm layers.
    """
    if isinstance(module, str) and module not in BACKBONES:
        module = TorchvisionModel(name=module)
    if not (needs_batchnorm and isinstance(module, TorchvisionModel)):
        return
    if module.name not in _torchvision_names():
        return  # the spec's own validation names the problem at build
    norms = _norm_layers(module.name)
    if not any(n.startswith("BatchNorm") for n in norms):
        found = ", ".join(norms) if norms else "no normalisation layers"
        raise ValueError(
            f"torchvision model {module.name!r} has no BatchNorm layers (it has "
            f"{found}), so BEN's plate-wise batch statistics would change "
            "nothing; choose a model with BatchNorm (e.g. resnet18, "
            "efficientnet_b0, mobilenet_v3_small, regnet_x_400mf, densenet121) "
            "or use norm='frozen'."
        )


#: Built-in names accepted by the ``module`` parameter of the estimators; any
#: torchvision classification model name is accepted too.
BACKBONES = {
    "mlp": MLP,
    "cnn": SmallCNN,
    "resnet18": lambda: ResNet(depth=18),
    "resnet34": lambda: ResNet(depth=34),
    "resnet50": lambda: ResNet(depth=50),
    "resnet101": lambda: ResNet(depth=101),
}


def backbone_names() -> list[str]:
    """Every name the ``module`` parameter accepts.

    Returns
    -------
    names : list of str
        The built-in names and torchvision's classification models.
    """
    return sorted(set(BACKBONES) | set(_torchvision_names()))


def backbone_spec(name: str) -> _Backbone:
    """The backbone specification a name stands for.

    Parameters
    ----------
    name : str
        A name from :func:`backbone_names`.

    Returns
    -------
    spec : backbone specification
    """
    if name in BACKBONES:
        return BACKBONES[name]()
    return TorchvisionModel(name=name)


def resolve_backbone(module, n_inputs: int, *, ndim: int) -> tuple[nn.Module, str]:
    """Build the network that ``module`` names or returns a copy of it.

    Parameters
    ----------
    module : str, backbone specification or torch.nn.Module
        A name from :data:`BACKBONES`, a spec such as ``SmallCNN()``, or a
        user's network mapping a batch to (N, D) features (deep-copied).
    n_inputs : int
        Channels of the images, or number of features.
    ndim : int
        Dimensions of ``X`` (2 for feature tables, 4 for images).

    Returns
    -------
    network : torch.nn.Module
    description : str
    """
    import copy

    if isinstance(module, str):
        if module not in backbone_names():
            raise ValueError(
                f"Unknown module {module!r}; expected one of {sorted(BACKBONES)}, "
                "a torchvision classification model name, a backbone such as "
                "sklearn_ben.backbones.SmallCNN(), or a torch.nn.Module that "
                "returns (N, D) features."
            )
        module = backbone_spec(module)
    if isinstance(module, _Backbone):
        wanted = 2 if module.input_kind == "features" else 4
        if ndim != wanted:
            kind = "a feature table (N, F)" if wanted == 2 else "images (N, C, H, W)"
            raise ValueError(
                f"module {type(module).__name__} expects {kind}, but X has "
                f"{ndim} dimensions; use module='mlp' for feature tables and "
                "'cnn' or a ResNet for images."
            )
        return module.build(n_inputs), repr(module)
    if isinstance(module, nn.Module):
        _warn_classifier(module)
        return copy.deepcopy(module), type(module).__name__
    raise TypeError(
        "module must be a backbone name, a backbone specification or a "
        f"torch.nn.Module, but got {type(module).__name__}."
    )


def feature_dim(network: nn.Module, sample: torch.Tensor) -> int:
    """Run two samples through ``network`` (eval mode) to find D."""
    was_training = network.training
    network.eval()
    with torch.no_grad():
        out = network(sample)
    network.train(was_training)
    if out.dim() != 2:
        raise ValueError(
            "module must return features of shape (N, D), but it returned "
            f"shape {tuple(out.shape)}; end it with a pooling/flatten layer."
        )
    return int(out.shape[1])


def _warn_classifier(module: nn.Module) -> None:
    """Warn when a user's network still ends with a classification layer."""
    leaves = [(n, m) for n, m in module.named_modules() if not list(m.children())]
    if not leaves or not isinstance(leaves[-1][1], nn.Linear):
        return
    name, layer = leaves[-1]
    warnings.warn(
        f"module ends with a Linear layer ({name or type(module).__name__}: "
        f"{layer.in_features} -> {layer.out_features}), which looks like a "
        "classifier; the estimator trains its own head on top of these outputs. "
        "Remove it with sklearn_ben.backbones.strip_classifier(model) (or "
        "model.fc = torch.nn.Identity()), or pass a torchvision name such as "
        "module='resnet18'. If the layer is meant as the feature layer, ignore "
        "this warning.",
        UserWarning,
        stacklevel=4,
    )
