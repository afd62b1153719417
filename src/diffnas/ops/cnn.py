"""The CNN primitives of the DARTS, RobustDARTS and NAS-Bench-201 spaces.

Every factory in `OPS` has the signature `(C_in, C_out, stride, affine) -> nn.Module`.
Stride-2 ops give ceil(H/2) x ceil(W/2) outputs for any input size, so odd image sizes work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from diffnas.registry import Registry

OPS: Registry = Registry("operation")


class ReLUConvBN(nn.Sequential):
    """ReLU -> conv -> BatchNorm."""

    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True, dilation=1):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(C_in, C_out, kernel, stride, padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


def _cpu_training(x: torch.Tensor) -> bool:
    """A CPU pass that records gradients, in float32/float64 (no autocast): where the custom
    depthwise shortcuts apply."""
    return (
        x.device.type == "cpu" and torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu")
    )


class DepthwiseConv2d(nn.Conv2d):
    """A bias-free depthwise conv with two exact CPU training shortcuts.

    - Stride 1, 'same' padding: the input gradient is computed as a forward conv with the
      flipped kernel (the same numbers; 7-17x faster than the CPU backward kernel, measured
      with 1 thread, 64x16x32x32).
    - Stride 2 with dilation 2 and 'same' padding (the reduction cells' dil_conv): every tap of
      output (i, j) reads input (2i + 2a - p, 2j + 2b - p) with p even, i.e. only the even rows
      and columns. The conv is therefore a stride-1 undilated conv of x[:, :, ::2, ::2] with
      padding p/2 (the same products and sums), and takes the first shortcut; forward plus
      backward 6-10x faster than the strided dilated kernel (2 threads, channels_last).
    """

    def __init__(self, C, kernel, stride, padding, dilation=1):
        super().__init__(C, C, kernel, stride, padding, dilation=dilation, groups=C, bias=False)
        same = padding == dilation * (kernel - 1) // 2
        # "same": the flip shortcut; "even": the even taps, then "same"; "plain": neither.
        self.mode = "same" if stride == 1 and same else "plain"
        if stride == 2 and dilation == 2 and same:
            self.mode = "even"

    def shortcut(self, x: torch.Tensor) -> bool:
        """Does training on `x` take a shortcut? (Inference and export take the plain conv.)"""
        return self.mode != "plain" and _cpu_training(x)

    def geometry(self) -> tuple[str, tuple, tuple, tuple]:
        """(mode, stride, padding, dilation) of the conv the shortcut computes."""
        if self.mode == "even":
            return "even", (1, 1), (self.padding[0] // 2, self.padding[1] // 2), (1, 1)
        return self.mode, self.stride, self.padding, self.dilation

    def forward(self, x):
        if self.shortcut(x):
            _, _, padding, dilation = self.geometry()
            x = _even_taps(x) if self.mode == "even" else x
            return _DepthwiseSame.apply(x, self.weight, padding, dilation)
        return super().forward(x)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last if x is laid out so, else contiguous."""
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if cl else torch.contiguous_format


def _even_taps(x: torch.Tensor, start: int = 0) -> torch.Tensor:
    """x[:, :, start::2, start::2], copied into x's memory format (the slice alone would lose
    it)."""
    return x[:, :, start::2, start::2].contiguous(memory_format=_format_of(x))


def _depthwise_grads(mode, g, x_in, w, stride, padding, dilation, need_x: bool, need_w: bool):
    """(d/dx_in, d/dw) of a depthwise conv of `x_in` (None where not needed); "same" and
    "even" geometries take the input gradient as the flipped-kernel forward conv (the adjoint
    of a stride-1 'same' correlation)."""
    C = w.shape[0]
    gx = gw = None
    fast_x = need_x and mode != "plain"
    if fast_x:
        gx = F.conv2d(g, w.flip(-1, -2), None, 1, padding, dilation, groups=C)
    if need_w or (need_x and not fast_x):
        mask = (need_x and not fast_x, need_w, False)
        gx_slow, gw, _ = torch.ops.aten.convolution_backward(
            g, x_in, w, None, stride, padding, dilation, False, (0, 0), C, mask
        )
        gx = gx if fast_x else gx_slow
    return gx, gw


class _DepthwiseSame(torch.autograd.Function):
    """Stride-1 'same' depthwise conv with a fast input gradient (see DepthwiseConv2d)."""

    @staticmethod
    def forward(ctx, x, w, padding, dilation):
        ctx.save_for_backward(x, w)
        ctx.padding, ctx.dilation = padding, dilation
        return F.conv2d(x, w, None, 1, padding, dilation, groups=w.shape[0])

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        gx, gw = _depthwise_grads(
            "same", g, x, w, (1, 1), ctx.padding, ctx.dilation, need_x, need_w
        )
        return gx, gw, None, None


def depthwise_pointwise(dw: DepthwiseConv2d, pw: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """pw(dw(x)), where training on CPU does not keep dw(x) for the backward.

    The intermediate is recomputed in the backward, and only when the pointwise weight's
    gradient needs it; the gradients are those of the two convs run one after the other (the
    same kernels on the same numbers). Every sep_conv/dil_conv of a search cell has two or one
    such pairs, so this drops a third of a DARTS supernet's saved activations.
    """
    if not _cpu_training(x):
        return pw(dw(x))
    mode, stride, padding, dilation = dw.geometry()
    return _DepthwisePointwise.apply(x, dw.weight, pw.weight, mode, stride, padding, dilation)


class _DepthwisePointwise(torch.autograd.Function):
    """A depthwise conv then a 1x1 conv; the middle tensor is recomputed, not saved."""

    @staticmethod
    def _depthwise(x, w, mode, stride, padding, dilation):
        x_in = _even_taps(x) if mode == "even" else x
        return x_in, F.conv2d(x_in, w, None, stride, padding, dilation, groups=w.shape[0])

    @staticmethod
    def forward(ctx, x, w_dw, w_pw, mode, stride, padding, dilation):
        ctx.save_for_backward(x, w_dw, w_pw)
        ctx.geometry = (mode, stride, padding, dilation)
        _, mid = _DepthwisePointwise._depthwise(x, w_dw, *ctx.geometry)
        return F.conv2d(mid, w_pw)

    @staticmethod
    def backward(ctx, g):
        x, w_dw, w_pw = ctx.saved_tensors
        need_x, need_dw, need_pw = ctx.needs_input_grad[:3]
        mode, stride, padding, dilation = ctx.geometry
        x_in, mid = x, None
        if need_pw:  # the 1x1 weight gradient is the only one that reads the middle tensor
            x_in, mid = _DepthwisePointwise._depthwise(x, w_dw, *ctx.geometry)
        elif mode == "even" and need_dw:
            x_in = _even_taps(x)
        g_mid = g_pw = None
        if need_x or need_dw or need_pw:
            # Without the weight gradient, convolution_backward reads only the shape and memory
            # format of `mid`: an unwritten tensor serves.
            mid_or_shape = mid
            if mid is None:
                shape = (g.shape[0], w_pw.shape[1], *g.shape[2:])
                mid_or_shape = torch.empty(
                    shape, dtype=g.dtype, device=g.device, memory_format=_format_of(g)
                )
            g_mid, g_pw, _ = torch.ops.aten.convolution_backward(
                g,
                mid_or_shape,
                w_pw,
                None,
                (1, 1),
                (0, 0),
                (1, 1),
                False,
                (0, 0),
                1,
                (need_x or need_dw, need_pw, False),
            )
        gx = g_dw = None
        if need_x or need_dw:
            gx, g_dw = _depthwise_grads(
                mode, g_mid, x_in, w_dw, stride, padding, dilation, need_x, need_dw
            )
        if gx is not None and mode == "even":
            full = torch.zeros_like(x)
            full[:, :, ::2, ::2] = gx
            gx = full
        return gx, g_dw, g_pw, None, None, None, None


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BatchNorm."""

    def __init__(self, C_in, C_out, kernel, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            DepthwiseConv2d(C_in, kernel, stride, padding, dilation),
            nn.Conv2d(C_in, C_out, 1, bias=False),
            nn.BatchNorm2d(C_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """Two DilConv blocks without dilation; only the first one strides."""

    def __init__(self, C_in, C_out, kernel, stride, padding, affine=True):
        super().__init__(
            DilConv(C_in, C_in, kernel, stride, padding, 1, affine),
            DilConv(C_in, C_out, kernel, 1, padding, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs, concatenated, then BatchNorm.

    Each stride-2 1x1 conv runs as a stride-1 1x1 conv of the rows and columns it reads
    (`x[:, :, ::2, ::2]` and `x[:, :, 1::2, 1::2]`): the same products and sums. The strided
    form is avoided on purpose: on CPUs where oneDNN takes its AVX2 kernels, torch 2.13's
    weight gradient of a channels_last stride-2 1x1 conv with 2-6 input channels and an even
    input size writes past its buffer (heap corruption, then a segfault or a "double free";
    `tests/test_cpu_kernels.py` runs the case with `ONEDNN_MAX_CPU_ISA=AVX2`).
    """

    def __init__(self, C_in, C_out, affine=True):
        super().__init__()
        if C_out % 2:
            raise ValueError(f"FactorizedReduce needs an even C_out, got {C_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_1 = nn.Conv2d(C_in, C_out // 2, 1, bias=False)
        self.conv_2 = nn.Conv2d(C_in, C_out // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(C_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        # Odd sizes: pad one zero row/column so both branches give ceil(H/2); even sizes are
        # untouched, which keeps the original DARTS arithmetic.
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(
            torch.cat([self.conv_1(_even_taps(x)), self.conv_2(_even_taps(x, 1))], dim=1)
        )


class Identity(nn.Module):
    """The identity."""

    def forward(self, x):
        return x


class Zero(nn.Module):
    """The `none` op. Supernets never call it (a zero costs nothing); it exists for completeness."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        if self.stride == 1:
            return torch.zeros_like(x)
        return torch.zeros_like(x[:, :, :: self.stride, :: self.stride])


class Noise(nn.Module):
    """RobustDARTS S4's harmful `noise` op: Gaussian noise N(0, 1) of the output's shape."""

    def __init__(self, stride, mean=0.0, std=1.0):
        super().__init__()
        self.stride, self.mean, self.std = stride, mean, std

    def forward(self, x):
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return torch.randn_like(x) * self.std + self.mean


class AvgPool3x3(nn.Module):
    """3x3 average pooling, padding 1, padded zeros not counted (count_include_pad=False).

    Computed as a depthwise convolution with a ones kernel times 1/count: the same function as
    nn.AvgPool2d (to float rounding), about 8x faster forward+backward on CPU in NCHW.
    """

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride
        self._inv_count: dict[tuple, torch.Tensor] = {}

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        inv = self._inv_count.get(key)
        if inv is None:
            ones = torch.ones(1, 1, *x.shape[-2:], device=x.device, dtype=x.dtype)
            count = F.conv2d(
                ones,
                torch.ones(1, 1, 3, 3, device=x.device, dtype=x.dtype),
                stride=self.stride,
                padding=1,
            )
            inv = self._inv_count[key] = 1.0 / count
        return inv

    def forward(self, x):
        C = x.shape[1]
        kernel = torch.ones(C, 1, 3, 3, device=x.device, dtype=x.dtype)
        return F.conv2d(x, kernel, stride=self.stride, padding=1, groups=C) * self._scale(x)


class Pool(nn.Module):
    """3x3 average or max pooling; a 1x1 ReLUConvBN first when the channel count changes."""

    def __init__(self, kind, C_in, C_out, stride, affine=True):
        super().__init__()
        self.pre = None if C_in == C_out else ReLUConvBN(C_in, C_out, 1, 1, 0, affine)
        if kind == "avg":
            self.pool = AvgPool3x3(stride)
        else:
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)

    def forward(self, x):
        return self.pool(x if self.pre is None else self.pre(x))


def _skip(C_in, C_out, stride, affine):
    if stride == 1 and C_in == C_out:
        return Identity()
    if stride == 1:
        return ReLUConvBN(C_in, C_out, 1, 1, 0, affine)
    return FactorizedReduce(C_in, C_out, affine)


OPS.add("none", lambda C_in, C_out, stride, affine: Zero(stride))
OPS.add("noise", lambda C_in, C_out, stride, affine: Noise(stride))
OPS.add("skip_connect", _skip)
OPS.add(
    "avg_pool_3x3", lambda C_in, C_out, stride, affine: Pool("avg", C_in, C_out, stride, affine)
)
OPS.add(
    "max_pool_3x3", lambda C_in, C_out, stride, affine: Pool("max", C_in, C_out, stride, affine)
)
OPS.add(
    "sep_conv_3x3", lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 3, stride, 1, affine)
)
OPS.add(
    "sep_conv_5x5", lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 5, stride, 2, affine)
)
OPS.add(
    "sep_conv_7x7", lambda C_in, C_out, stride, affine: SepConv(C_in, C_out, 7, stride, 3, affine)
)
OPS.add(
    "dil_conv_3x3",
    lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 3, stride, 2, 2, affine),
)
OPS.add(
    "dil_conv_5x5",
    lambda C_in, C_out, stride, affine: DilConv(C_in, C_out, 5, stride, 4, 2, affine),
)
# NAS-Bench-201's convolutions: a single ReLU-conv-BN.
OPS.add(
    "nor_conv_1x1",
    lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 1, stride, 0, affine),
)
OPS.add(
    "nor_conv_3x3",
    lambda C_in, C_out, stride, affine: ReLUConvBN(C_in, C_out, 3, stride, 1, affine),
)

PARAMETER_FREE = frozenset({"none", "noise", "skip_connect", "avg_pool_3x3", "max_pool_3x3"})


def make_op(name: str, C_in: int, C_out: int, stride: int, affine: bool) -> nn.Module:
    """Build the op registered as `name`."""
    return OPS.get(name)(C_in, C_out, stride, affine)
