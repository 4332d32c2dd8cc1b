"""The official PyTorch SGE, re-implemented for the tests and benchmarks.

Written from implus/PytorchInsight, classification/models/imagenet/
resnet_sge.py (see shared/reference/sge-reference.md). Keep it literal: it is
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
        layer.weight.copy_(torch.from_numpy(np.asarray(gamma, "float32")).view(1, groups, 1, 1))
        layer.bias.copy_(torch.from_numpy(np.asarray(beta, "float32")).view(1, groups, 1, 1))
        return layer(torch.from_numpy(np.ascontiguousarray(x_nchw, "float32"))).numpy()
