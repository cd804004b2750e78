# Pure-torch stand-ins for rosinality's CUDA ops, written from their documented semantics (CPU reference run only).
import torch
import torch.nn.functional as F
from torch import nn


def fused_leaky_relu(x, bias=None, negative_slope=0.2, scale=2**0.5):
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2**0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope, self.scale = negative_slope, scale

    def forward(self, x):
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


def upfirdn2d(x, kernel, up=1, down=1, pad=(0, 0)):
    p0, p1 = pad[0], pad[1]
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h, up, w, up)
        y[:, :, :, 0, :, 0] = x
        x = y.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    H, W = x.shape[-2:]
    x = x[:, :, max(-p0, 0) : H - max(-p1, 0), max(-p0, 0) : W - max(-p1, 0)]
    k = torch.flip(kernel, [0, 1]).to(x.dtype)[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, k, groups=c)
    return x[:, :, ::down, ::down]


class conv2d_gradfix:  # noqa: N801 (module-like namespace)
    conv2d = staticmethod(F.conv2d)
    conv_transpose2d = staticmethod(F.conv_transpose2d)
