"""TF 'same' padding fixed at the export size and folded into each ONNX ``Conv``.

EfficientNet's ``Conv2dDynamicSamePadding`` computes its padding from ``x.size()`` in
``forward``; traced, every such conv becomes ``Shape -> ... -> Pad -> Conv``. ONNX Runtime
then cannot keep its blocked (NCHWc) layout across the ``Pad``: each one costs a pad copy
plus a reorder in and out, about half of the lite0 graph's time on a 2-core CPU (profile in
BENCHMARKS.md, issue #12). :func:`static_padding` swaps each dynamic conv for a
:class:`StaticSameConv` whose padding is computed once for the export size and exported as
the ``pads`` attribute of the ONNX ``Conv`` (asymmetric pads included), so the graph has no
``Pad`` left. In torch both compute the same numbers (same pads, same conv).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

DYNAMIC_CONV = "Conv2dDynamicSamePadding"  # efficientnet_lite_pytorch's class name


def same_pads(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
              dilation: tuple[int, int] = (1, 1)) -> tuple[int, int, int, int]:
    """TF 'same' padding for an ``(H, W)`` input: ``(left, right, top, bottom)`` as
    ``F.pad`` takes it (the odd pixel goes right/bottom, as in TensorFlow)."""
    out = []
    for i, k, s, d in zip(size, kernel, stride, dilation):
        o = -(-i // s)
        out.append(max((o - 1) * s + (k - 1) * d + 1 - i, 0))
    ph, pw = out
    return pw // 2, pw - pw // 2, ph // 2, ph - ph // 2


class _PaddedConv(torch.autograd.Function):
    """``conv2d(pad(x))`` in torch; one ONNX ``Conv`` with ``pads`` when exported."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads, stride, dilation, groups, kernel):  # noqa: ARG004
        return F.conv2d(F.pad(x, list(pads)), weight, bias, stride, 0, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, pads, stride, dilation, groups, kernel):
        left, right, top, bottom = pads
        # a missing bias must not reach g.op as an input (the exporter crashes on it)
        inputs = (x, weight) if bias is None or bias.node().mustBeNone() else (x, weight, bias)
        return g.op("Conv", *inputs, pads_i=[top, left, bottom, right], strides_i=list(stride),
                    dilations_i=list(dilation), group_i=groups, kernel_shape_i=list(kernel))


class StaticSameConv(nn.Module):
    """A dynamic-'same' conv with its padding fixed for input ``size = (H, W)``; shares the
    original's weight and bias. ``(B, Cin, H, W) -> (B, Cout, ceil(H/s), ceil(W/s))``."""

    def __init__(self, conv: nn.Conv2d, size: tuple[int, int]) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.stride, self.dilation = tuple(conv.stride), tuple(conv.dilation)
        self.groups = conv.groups
        self.size = tuple(size)
        self.pads = same_pads(self.size, tuple(conv.weight.shape[-2:]), self.stride,
                              self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"StaticSameConv fixed for {self.size}, got {tuple(x.shape[-2:])}")
        return _PaddedConv.apply(x, self.weight, self.bias, self.pads, self.stride,
                                 self.dilation, self.groups, tuple(self.weight.shape[-2:]))


def static_padding(module: nn.Module, example: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``module`` whose dynamic-'same' convs are :class:`StaticSameConv` for the
    input sizes they see on ``module(*example)``; ``module`` itself is left as it was. A module
    without such convs comes back as it is (no copy)."""
    if not any(type(m).__name__ == DYNAMIC_CONV for m in module.modules()):
        return module
    module = copy.deepcopy(module)
    sizes: dict[str, tuple[int, int]] = {}

    def recorder(name: str):
        return lambda _m, args: sizes.__setitem__(name, tuple(int(v) for v in
                                                              args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(recorder(n)) for n, m in module.named_modules()
             if type(m).__name__ == DYNAMIC_CONV]
    try:
        with torch.no_grad():
            module(*example)
    finally:
        for h in hooks:
            h.remove()
    for name, size in sizes.items():
        parent, _, leaf = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, leaf, StaticSameConv(module.get_submodule(name), size))
    return module
