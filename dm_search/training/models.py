"""Model registry: ``create_model(name, input_shape, num_classes, **options)``.

Registered: ``mlp``, ``cnn1d`` (for 1-D signals such as MNIST-1D), ``cnn2d`` (a small image
CNN), ``resnet20/32/44/56/110`` (He et al.'s CIFAR ResNets; the paper uses 44 and 56) and
``resnet18/34/50`` (torchvision, random initialisation).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dm_search.common import plugins
from dm_search.common.registry import Registry

__all__ = ["ENTRY_POINTS", "check_options", "create_model", "get_factory", "names", "register"]

Factory = Callable[..., nn.Module]
_REGISTRY: Registry[Factory] = Registry("model")
register = _REGISTRY.register
names = _REGISTRY.names


def create_model(
    name: str, input_shape: tuple[int, ...], num_classes: int, **options: Any
) -> nn.Module:
    """Build a registered model for inputs of ``input_shape`` (without the batch dimension).

    Unknown names list the known ones; unknown options list the accepted ones.
    """
    factory = check_options(name, options)
    model = factory(input_shape=tuple(input_shape), num_classes=num_classes, **options)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model factory {name!r} returned a {type(model).__name__}, not a "
                        "torch.nn.Module")
    return model


def get_factory(name: str) -> Factory:
    """A registered model, a factory of your own ("my_module:make_net") or one an installed
    package registers under the ``dm_search.models`` entry point."""
    return plugins.resolve(name, "model factory", _REGISTRY.get, ENTRY_POINTS)


ENTRY_POINTS = "dm_search.models"


def check_options(name: str, options: dict[str, Any]) -> Factory:
    """The model's factory, once it is known to accept ``options``; checked without building
    the model."""
    factory = get_factory(name)
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [p for p in params if p not in ("input_shape", "num_classes")]
    unknown = sorted(set(options) - set(accepted))
    if unknown and not takes_any:
        raise ValueError(
            f"model {name!r} got unknown option(s) {', '.join(unknown)}; it accepts: "
            f"{', '.join(accepted) or 'none'}."
        )
    problem = plugins.call_problem(factory, (), {"input_shape": (1,), "num_classes": 2,
                                                 **options})
    if problem:
        raise ValueError(f"model factory {name!r} is called as factory(input_shape=..., "
                         f"num_classes=..., **model.options) and cannot be: {problem}")
    return factory


def _need_dims(name: str, input_shape: tuple[int, ...], dims: int, what: str) -> None:
    if len(input_shape) != dims:
        raise ValueError(f"model {name!r} needs {what} inputs; this dataset's are shaped "
                         f"{input_shape}. Pick a model that fits (mlp works for any input).")


@register("mlp")
def mlp(*, input_shape: tuple[int, ...], num_classes: int, width: int = 256,
        depth: int = 2) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    d = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU(inplace=True)]
        d = width
    layers.append(nn.Linear(d, num_classes))
    return nn.Sequential(*layers)


@register("cnn1d")
def cnn1d(*, input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """Three strided 1-D convolutions with batch norm, then a linear head."""
    _need_dims("cnn1d", input_shape, 2, "(channels, length)")
    c, length = input_shape

    def block(i: int, o: int, k: int, s: int) -> list[nn.Module]:
        return [nn.Conv1d(i, o, k, stride=s, padding=k // 2, bias=False), nn.BatchNorm1d(o),
                nn.ReLU(inplace=True)]

    body = nn.Sequential(*block(c, width, 5, 1), *block(width, width, 3, 2),
                         *block(width, 2 * width, 3, 2), nn.Flatten())
    with torch.no_grad():
        feat = body(torch.zeros(2, c, length)).shape[1]
    return nn.Sequential(body, nn.Linear(feat, num_classes))


@register("cnn2d")
def cnn2d(*, input_shape: tuple[int, ...], num_classes: int, width: int = 32) -> nn.Module:
    """A small image CNN: three conv-BN-ReLU stages, pooling, global average, linear."""
    _need_dims("cnn2d", input_shape, 3, "(channels, height, width)")
    c = input_shape[0]
    layers: list[nn.Module] = []
    i = c
    for stage, o in enumerate((width, 2 * width, 4 * width)):
        layers += [nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o),
                   nn.ReLU(inplace=True)]
        if stage < 2:
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        i = o
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(i, num_classes)]
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    """Pre-2016 CIFAR block with the parameter-free shortcut ('option A'): a strided identity
    zero-padded to the new channel count, as in He et al.'s CIFAR experiments."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride
        self.pad = cout - cin

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        short = x
        if self.stride != 1 or self.pad:
            short = x[:, :, :: self.stride, :: self.stride]
            short = F.pad(short, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(out + short, inplace=True)


class CifarResNet(nn.Module):
    def __init__(self, depth: int, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2; got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = width
        for stage in range(3):
            cout = width * 2**stage
            for b in range(n):
                blocks.append(_BasicBlock(cin, cout, 2 if stage > 0 and b == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _cifar_resnet(depth: int) -> Factory:
    def factory(*, input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> nn.Module:
        _need_dims(f"resnet{depth}", input_shape, 3, "(channels, height, width)")
        return CifarResNet(depth, input_shape[0], num_classes, width)

    factory.__doc__ = f"CIFAR ResNet-{depth} (3 stages of {(depth - 2) // 6} basic blocks)."
    return factory


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}")(_cifar_resnet(_depth))


def _torchvision_resnet(arch: str) -> Factory:
    def factory(*, input_shape: tuple[int, ...], num_classes: int,
                small_input: bool | None = None) -> nn.Module:
        """torchvision ResNet, random init. ``small_input`` (default: images up to 64 px)
        swaps the 7x7/2 stem and max-pool for a 3x3/1 stem, the usual CIFAR adaptation."""
        import torchvision.models as tvm

        _need_dims(arch, input_shape, 3, "(channels, height, width)")
        model = getattr(tvm, arch)(weights=None, num_classes=num_classes)
        c = input_shape[0]
        small = max(input_shape[1:]) <= 64 if small_input is None else small_input
        if small:
            model.conv1 = nn.Conv2d(c, 64, 3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        elif c != 3:
            model.conv1 = nn.Conv2d(c, 64, 7, stride=2, padding=3, bias=False)
        return model

    return factory


for _arch in ("resnet18", "resnet34", "resnet50"):
    register(_arch)(_torchvision_resnet(_arch))
