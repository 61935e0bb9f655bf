"""Classifier networks on the 1x32x32 log-mel image of :mod:`sashimi.eval.frontend`.

- :class:`DigitCNN`: the compact CNN this project trains (FSDD, or SC09 for users who have it).
- :class:`ResNeXt`: the SaShiMi paper's SC09 classifier (ResNeXt-29, cardinality 8, base width
  64, widen factor 4; CIFAR-style, from tugstugi/pytorch-speech-commands), with the same
  parameter names as the authors' checkpoint, so their weights load as a state dict.

Both take dB images (N, 1, 32, 32) in [-80, 0] and return ``(logits (N, C), features (N, D))``
from :meth:`forward_features`; ``features`` is the pooled penultimate layer, the input of the
final linear layer (what FID is computed on).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["DigitCNN", "ResNeXt", "ResNeXtBottleneck", "ARCHITECTURES"]


class DigitCNN(nn.Module):
    """A small VGG-style CNN: three stages of two 3x3 conv + BN + ReLU, 2x2 max pooling between
    stages, global average pooling (so the word may sit anywhere in time), dropout, linear.

    Args:
        n_classes: number of classes.
        channels: channels of the three stages; the last is the feature dimension D.
        dropout: dropout before the final linear layer (training only).
    """

    def __init__(self, n_classes: int = 10, channels: tuple[int, ...] = (32, 64, 128), dropout: float = 0.3):
        super().__init__()
        layers, c_in = [], 1
        for i, c in enumerate(channels):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
                c_in = c
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(c_in, n_classes)
        self.feature_dim = c_in

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) dB image -> (logits (N, C), features (N, D))."""
        x = x / 40.0 + 1.0  # [-80, 0] dB -> [-1, 1]
        features = self.body(x).mean(dim=(2, 3))
        return self.classifier(self.dropout(features)), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class ResNeXtBottleneck(nn.Module):
    """ResNeXt bottleneck, type C: 1x1 reduce, grouped 3x3, 1x1 expand, plus a shortcut
    (1x1 conv + BN when the channels change). Parameter names as in the authors' code."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, cardinality: int, base_width: int,
                 widen_factor: int):
        super().__init__()
        inner = cardinality * int(base_width * out_channels / (widen_factor * 64.0))
        self.conv_reduce = nn.Conv2d(in_channels, inner, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(inner)
        self.conv_conv = nn.Conv2d(inner, inner, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(inner)
        self.conv_expand = nn.Conv2d(inner, out_channels, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if in_channels != out_channels:
            self.shortcut.add_module("shortcut_conv",
                                     nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False))
            self.shortcut.add_module("shortcut_bn", nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn_reduce(self.conv_reduce(x)))
        y = F.relu(self.bn(self.conv_conv(y)))
        y = self.bn_expand(self.conv_expand(y))
        return F.relu(self.shortcut(x) + y)


class ResNeXt(nn.Module):
    """CIFAR-style ResNeXt (Xie et al. 2017) on 1x32x32 inputs: the SaShiMi paper's SC09 classifier.

    A 3x3 stem (64 channels), three stages of (depth - 2) // 9 bottlenecks with 64w, 128w and
    256w output channels (w = ``widen_factor``; strides 1, 2, 2), 8x8 average pooling to a
    256w-dimensional feature, a linear classifier. The defaults (ResNeXt-29, 8x64d, w = 4) have
    34.4M parameters and D = 1024.

    Args:
        n_classes: number of classes.
        cardinality: groups of the 3x3 convolutions.
        depth: 29 (3 bottlenecks per stage); any 9k + 2.
        base_width: channels per group in the first stage.
        widen_factor: channel multiplier of the stage outputs.
        in_channels: image channels (1: one log-mel image).
    """

    def __init__(self, n_classes: int = 10, cardinality: int = 8, depth: int = 29, base_width: int = 64,
                 widen_factor: int = 4, in_channels: int = 1):
        super().__init__()
        if (depth - 2) % 9 or depth < 11:
            raise ValueError(f"depth must be 9k + 2 with k >= 1, got {depth}")
        self.block_depth = (depth - 2) // 9
        stages = [64, 64 * widen_factor, 128 * widen_factor, 256 * widen_factor]
        self.conv_1_3x3 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        args = (cardinality, base_width, widen_factor)
        self.stage_1 = self._stage("stage_1", stages[0], stages[1], 1, *args)
        self.stage_2 = self._stage("stage_2", stages[1], stages[2], 2, *args)
        self.stage_3 = self._stage("stage_3", stages[2], stages[3], 2, *args)
        self.classifier = nn.Linear(stages[3], n_classes)
        self.feature_dim = stages[3]
        self._init_weights()

    @staticmethod
    def config_from_state_dict(state: dict) -> dict:
        """The constructor arguments that fit a state dict with this class's parameter names."""
        prefix = "stage_1.stage_1_bottleneck_"
        blocks = {k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)}
        inner, per_group = state[prefix + "0.conv_conv.weight"].shape[:2]
        cardinality = inner // per_group
        return dict(n_classes=state["classifier.weight"].shape[0], cardinality=cardinality,
                    depth=9 * len(blocks) + 2, base_width=inner // cardinality,  # stage 1: width ratio 1
                    widen_factor=state["classifier.weight"].shape[1] // 256,
                    in_channels=state["conv_1_3x3.weight"].shape[1])

    def _stage(self, name: str, c_in: int, c_out: int, stride: int, *args) -> nn.Sequential:
        stage = nn.Sequential()
        for i in range(self.block_depth):
            first = i == 0
            stage.add_module(f"{name}_bottleneck_{i}",
                             ResNeXtBottleneck(c_in if first else c_out, c_out, stride if first else 1, *args))
        return stage

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, 32, 32) dB image -> (logits (N, C), features (N, 256w))."""
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        features = F.avg_pool2d(x, 8, 1).flatten(1)  # 8x8 -> 1x1 for 32x32 inputs
        return self.classifier(features), features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


#: architecture name (stored in classifier files) -> class
ARCHITECTURES = {"digit_cnn": DigitCNN, "resnext": ResNeXt}
