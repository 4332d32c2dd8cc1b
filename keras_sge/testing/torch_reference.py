"""The official PyTorch SGE, re-implemented for the tests and benchmarks.

Written from implus/PytorchInsight, classification/models/imagenet/
resnet_sge.py (the paper's official code). Keep it literal: it is
the ground truth our Keras code is compared with, so it keeps the reference's
NCHW `view` into (b * groups, c / groups, h, w), the unbiased `Tensor.std`
and the epsilon added to the std. It is imported (never copied) by the
parity tests, the fixture generator and the benchmarks.

Importing this module needs torch; callers skip when torch is missing.
"""

import torch
from torch import nn


class SpatialGroupEnhance(nn.Module):
    """The reference layer, line for line."""

    def __init__(self, groups=64):
        super().__init__()
        self.groups = groups
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.weight = nn.Parameter(torch.zeros(1, groups, 1, 1))
        self.bias = nn.Parameter(torch.ones(1, groups, 1, 1))
        self.sig = nn.Sigmoid()

    def forward(self, x):  # (b, c, h, w)
        b, c, h, w = x.size()
        x = x.view(b * self.groups, -1, h, w)
        xn = x * self.avg_pool(x)
        xn = xn.sum(dim=1, keepdim=True)
        t = xn.view(b * self.groups, -1)
        t = t - t.mean(dim=1, keepdim=True)
        std = t.std(dim=1, keepdim=True) + 1e-5
        t = t / std
        t = t.view(b, self.groups, h, w)
        t = t * self.weight + self.bias
        t = t.view(b * self.groups, 1, h, w)
        x = x * self.sig(t)
        x = x.view(b, c, h, w)
        return x


def sge_forward(x_nchw, gamma, beta, groups):
    """Runs the reference layer on numpy arrays (NCHW), returns numpy."""
    import numpy as np

    layer = SpatialGroupEnhance(groups)
    with torch.no_grad():
        layer.weight.copy_(
            torch.from_numpy(np.asarray(gamma, "float32")).view(1, groups, 1, 1)
        )
        layer.bias.copy_(
            torch.from_numpy(np.asarray(beta, "float32")).view(1, groups, 1, 1)
        )
        return layer(
            torch.from_numpy(np.ascontiguousarray(x_nchw, "float32"))
        ).numpy()


# ---------------------------------------------------------------------------
# The reference SGE-ResNet (resnet_sge.py): torchvision-style ResNet v1.5 with
# SpatialGroupEnhance after the last BN of every block. Module attribute names
# are the reference's, so `state_dict()` keys match the official checkpoints
# (conv1, bn1, layer{1..4}.{i}.conv{k}/bn{k}/sge/downsample.{0,1}, fc).
# `groups=None` leaves `sge` out: the state_dict is then torchvision's ResNet.
# ---------------------------------------------------------------------------


def conv3x3(in_planes, out_planes, stride=1):
    """3x3 convolution, padding 1, no bias."""
    return nn.Conv2d(
        in_planes,
        out_planes,
        kernel_size=3,
        stride=stride,
        padding=1,
        bias=False,
    )


def conv1x1(in_planes, out_planes, stride=1):
    """1x1 convolution, no bias."""
    return nn.Conv2d(
        in_planes, out_planes, kernel_size=1, stride=stride, bias=False
    )


class BasicBlock(nn.Module):
    """conv3x3 (stride) - BN - ReLU - conv3x3 - BN - SGE, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=64):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride
        if groups is not None:
            self.sge = SpatialGroupEnhance(groups)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if hasattr(self, "sge"):
            out = self.sge(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 - BN - ReLU - 3x3 (stride) - BN - ReLU - 1x1 (4x) - BN - SGE, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=64):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride
        if groups is not None:
            self.sge = SpatialGroupEnhance(groups)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if hasattr(self, "sge"):
            out = self.sge(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max pool), four stages, avgpool, fc."""

    def __init__(
        self,
        block,
        layers,
        num_classes=1000,
        zero_init_residual=False,
        groups=64,
    ):
        super().__init__()
        self.inplanes = 64
        self.groups = groups
        self.conv1 = nn.Conv2d(
            3, 64, kernel_size=7, stride=2, padding=3, bias=False
        )
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="relu"
                )
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [
            block(self.inplanes, planes, stride, downsample, groups=self.groups)
        ]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


def sge_resnet18(**kwargs):
    """SGE-ResNet-18; `groups=None` gives torchvision's resnet18."""
    return ResNet(BasicBlock, [2, 2, 2, 2], **kwargs)


def sge_resnet34(**kwargs):
    """SGE-ResNet-34; `groups=None` gives torchvision's resnet34."""
    return ResNet(BasicBlock, [3, 4, 6, 3], **kwargs)


def sge_resnet50(**kwargs):
    """SGE-ResNet-50; `groups=None` gives torchvision's resnet50."""
    return ResNet(Bottleneck, [3, 4, 6, 3], **kwargs)


def sge_resnet101(**kwargs):
    """SGE-ResNet-101; `groups=None` gives torchvision's resnet101."""
    return ResNet(Bottleneck, [3, 4, 23, 3], **kwargs)


def sge_resnet152(**kwargs):
    """SGE-ResNet-152; `groups=None` gives torchvision's resnet152."""
    return ResNet(Bottleneck, [3, 8, 36, 3], **kwargs)


SGE_RESNETS = {
    18: sge_resnet18,
    34: sge_resnet34,
    50: sge_resnet50,
    101: sge_resnet101,
    152: sge_resnet152,
}


def trainable_parameter_count(model):
    """What the paper's tables count: parameters, not BN running statistics."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
