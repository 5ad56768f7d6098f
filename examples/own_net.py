"""A network of your own for the built-in training loop (see own_model.yaml): a factory called
as the built-in models are, with the input's shape, the number of classes and the options."""

from __future__ import annotations

import torch
from torch import nn


def signal_cnn(*, input_shape: tuple[int, ...], num_classes: int, width: int = 32,
               batch_norm: bool = False) -> nn.Module:
    """Three 1-D convolutions and a linear head, batch norm optional: without it the EDF and
    the learning rate that work are not the ones that work for the built-in cnn1d."""
    channels, length = input_shape

    def block(i: int, o: int, k: int, s: int) -> list[nn.Module]:
        norm: list[nn.Module] = [nn.BatchNorm1d(o)] if batch_norm else []
        return [nn.Conv1d(i, o, k, stride=s, padding=k // 2), *norm, nn.ReLU()]

    body = nn.Sequential(*block(channels, width, 5, 1), *block(width, width, 3, 2),
                         *block(width, 2 * width, 3, 2), nn.Flatten())
    with torch.no_grad():
        features = body(torch.zeros(2, channels, length)).shape[1]
    return nn.Sequential(body, nn.Linear(features, num_classes))
