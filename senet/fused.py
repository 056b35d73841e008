"""The SE block's two full-size operations with hand-written autograd, its inference fold into the
preceding 1×1 convolution and BN, and the hook test that lets the block take cheaper paths only
where nothing watches.

In training, the average pooling (:class:`_SpatialMean`) and the scaling fused with the residual
addition (:class:`_ScaleAdd`) have backward passes that skip the full-size temporaries autograd's
generic ones make (a materialised broadcast, a multiplication by 1).

At inference, an SE on ``bn(conv(v))`` (a bottleneck's last 1×1 convolution and BN, with BN's
running statistics) needs no full-size pass of its own. The average pooling commutes with the 1×1
convolution and with BN's per-channel affine map, so it can be taken on v, a quarter of the width,
where that reads less (:func:`pooled_conv_bn`). And ``s_c · BN(y)_c`` is a BN whose γ_c and β_c are
multiplied by s_c, so the scaling rides in BN's own pass (:func:`scaled_bn`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as _torch_module


class _SpatialMean(torch.autograd.Function):
    """``u.mean((2, 3))`` whose gradient stays a broadcast view of the (N, C) one.

    Autograd's own mean backward materialises the (N, C, H, W) gradient (and in NCHW even for a
    channels_last u), which is then added to the scaling's gradient of U: one full-size write and
    one read more per block than adding the view in place, which is what the engine does with it.
    """

    @staticmethod
    def forward(u):
        return u.mean((2, 3))

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.shape = inputs[0].shape

    @staticmethod
    def backward(ctx, g):
        return (g / (ctx.shape[2] * ctx.shape[3]))[:, :, None, None].expand(ctx.shape)

    @staticmethod
    def jvp(ctx, du):
        return du.mean((2, 3))


def spatial_mean(u: torch.Tensor) -> torch.Tensor:
    """Mean over H and W: (N, C, H, W) -> (N, C)."""
    if u.requires_grad and torch.is_grad_enabled():
        return _SpatialMean.apply(u)
    return u.mean((2, 3))


class _ScaleAdd(torch.autograd.Function):
    """``x + u·s`` (s broadcast over u) in one pass, with the backward of ``u * s + x``.

    ``torch.addcmul``'s own backward multiplies u by the scalar value 1 at full size before using
    it; this one computes exactly the gradients of the unfused product and sum.
    """

    @staticmethod
    def forward(x, u, s):
        return torch.addcmul(x, u, s)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, u, s = inputs
        ctx.save_for_backward(u, s)
        ctx.save_for_forward(u, s)

    @staticmethod
    def backward(ctx, g):
        u, s = ctx.saved_tensors
        _, need_u, need_s = ctx.needs_input_grad
        gu = gs = None
        if need_s:
            prod = g * u
            gs = prod.sum_to_size(s.shape)
            if (need_u and not torch.is_grad_enabled() and s.shape != prod.shape
                    and prod.dtype == torch.result_type(g, s)):
                # g·s into g·u's memory once reduced (not under create_graph): a fresh full-size
                # buffer costs page faults on top of its pass (large freed blocks go back to the OS)
                gu = torch.mul(g, s, out=prod)
        if need_u and gu is None:
            gu = g * s
        return g, gu, gs

    @staticmethod
    def jvp(ctx, dx, du, ds):
        u, s = ctx.saved_tensors
        out = torch.zeros_like(u) if dx is None else dx.clone()
        if du is not None:
            out.addcmul_(du, s)
        if ds is not None:
            out.addcmul_(u, ds)
        return out


def scale_add(x: torch.Tensor, u: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``x + u * s`` in one pass over the feature maps."""
    if torch.is_grad_enabled() and (x.requires_grad or u.requires_grad or s.requires_grad):
        return _ScaleAdd.apply(x, u, s)
    return torch.addcmul(x, u, s)


def has_hooks(m: nn.Module) -> bool:
    """Whether calling ``m`` would run hooks, by the same test as ``nn.Module.__call__``.

    Where a module would be skipped for a cheaper equivalent (its ``forward``'s arithmetic without
    the call, or two modules' work in one pass), hooks on it must still see it called.
    """
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
                or _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks
                or _torch_module._global_backward_hooks or _torch_module._global_backward_pre_hooks)


def owns_output(bn: nn.Module) -> bool:
    """Whether ``bn(...)`` returns a tensor only its caller holds, so the caller may write into it:
    a BatchNorm (its kernel always returns new memory) that no hook watches, with no gradient
    recorded (no graph keeps it either)."""
    return (not torch.is_grad_enabled() and isinstance(bn, nn.modules.batchnorm._BatchNorm)
            and not has_hooks(bn))


def add_into(fresh: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``fresh + other``, written into ``fresh`` (a tensor only the caller holds) where the two have
    one shape and dtype; a new tensor otherwise (under autocast, a bf16 ``fresh`` and a float32
    ``other`` sum to float32)."""
    if fresh.shape == other.shape and fresh.dtype == other.dtype:
        return fresh.add_(other)
    return fresh + other


def folds(conv: nn.Module, bn: nn.Module) -> bool:
    """Whether an SE on ``bn(conv(v))`` may fold into them: no gradient is recorded, ``conv`` is an
    ungrouped, unpadded 1×1 convolution with stride 1, ``bn`` normalises with its running statistics,
    and no hook watches either (the folded path does not call ``bn``)."""
    return (owns_output(bn) and not bn.training and bn.running_mean is not None
            and isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.groups == 1 and conv.padding in ((0, 0), "valid") and not has_hooks(conv))


def pooled_conv_bn(conv: nn.Conv2d, bn: nn.Module, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The spatial mean of ``bn(y)``, (N, C), for ``y = conv(v)`` (see :func:`folds`).

    Taken on v through the convolution's weights where v and the weights are less to read than y
    (a bottleneck's early stages, with large maps), on y where they are not.
    """
    c, h, w = y.shape[1:]
    k = v.shape[1]
    if k * (h * w + c) < c * h * w:
        z = F.linear(spatial_mean(v), conv.weight.flatten(1), conv.bias)
    else:
        z = spatial_mean(y)
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def scaled_bn(y: torch.Tensor, bn: nn.Module, s: torch.Tensor) -> torch.Tensor:
    """``s · bn(y)`` for a BN with running statistics and s of N × C elements, in one pass over y.

    ``s_c · BN(y)_c`` is a BN with γ_c·s_c and β_c·s_c; with one s per image, the N images are
    the N·C channels of one (a free view of NCHW memory; other layouts take one ``addcmul``).
    """
    n, c, h, w = y.shape
    s = s.reshape(c) if n == 1 else s.reshape(n, c)
    weight = s if bn.weight is None else s * bn.weight
    bias = None if bn.bias is None else s * bn.bias
    mean, var = bn.running_mean, bn.running_var
    if n == 1:
        return F.batch_norm(y, mean, var, weight, bias, False, 0.0, bn.eps)
    if y.is_contiguous():
        return F.batch_norm(y.view(1, n * c, h, w), mean.repeat(n), var.repeat(n), weight.view(-1),
                            None if bias is None else bias.view(-1), False, 0.0, bn.eps).view(n, c, h, w)
    scale = weight * torch.rsqrt(var + bn.eps)
    shift = -mean * scale if bias is None else bias - mean * scale
    return torch.addcmul(shift[:, :, None, None], y, scale[:, :, None, None])
