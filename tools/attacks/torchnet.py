"""PyTorch re-implementation of a keycam IR network (plain or keyed), for the training-based attacks.

Sparse keyed layers keep their support (only their non-zeros train), as an attacker who extracted the
deployed .tflite would have them. The final softmax is dropped: the module returns logits.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from tools.ir import Activation, AvgPool, Conv, Dense, Flatten, Network, Softmax, Unflatten


class SparseLinear(nn.Module):
    """y = W x + b with a fixed support (a mask); only the non-zeros are trained (dense compute: faster on CPU)."""

    def __init__(self, w: sp.csr_matrix, b: np.ndarray):
        super().__init__()
        dense = np.asarray(w.toarray(), dtype=np.float32)
        self.register_buffer("mask", torch.tensor(dense != 0, dtype=torch.float32))
        self.weight = nn.Parameter(torch.tensor(dense))
        self.bias = nn.Parameter(torch.tensor(b, dtype=torch.float32))

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)

    def reset_parameters(self) -> None:
        fan_in = max(float(self.mask.sum() / len(self.mask)), 1.0)
        with torch.no_grad():
            self.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
            self.bias.zero_()


class _Act(nn.Module):
    def __init__(self, act: str, alpha: float):
        super().__init__()
        self.act, self.alpha = act, alpha

    def forward(self, x):
        if self.act == "relu":
            return F.relu(x)
        if self.act == "leaky_relu":
            return F.leaky_relu(x, self.alpha)
        return x


class _Conv(nn.Module):
    def __init__(self, layer: Conv):
        super().__init__()
        o, i, kh, kw = layer.weight.shape
        self.conv = nn.Conv2d(i, o, (kh, kw), stride=layer.stride)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(layer.weight, dtype=torch.float32))
            self.conv.bias.copy_(torch.tensor(layer.bias, dtype=torch.float32))
        t, l, b, r = layer.pads
        self.pad = (l, r, t, b)

    def forward(self, x):
        return self.conv(F.pad(x, self.pad))


class TorchNet(nn.Module):
    """The IR network as a torch module taking flat (B, N) frames in [0, 1] and returning logits."""

    def __init__(self, net: Network):
        super().__init__()
        self.input_shape = tuple(int(s) for s in net.input_shape)
        mods: list[nn.Module] = []
        for layer in net.layers:
            if isinstance(layer, Conv):
                mods += [_Conv(layer), _Act(layer.act, layer.alpha)]
            elif isinstance(layer, Dense):
                if layer.sparse:
                    lin: nn.Module = SparseLinear(layer.weight.tocsr(), layer.bias)
                else:
                    w = np.asarray(layer.weight)
                    lin = nn.Linear(w.shape[1], w.shape[0])
                    with torch.no_grad():
                        lin.weight.copy_(torch.tensor(w, dtype=torch.float32))
                        lin.bias.copy_(torch.tensor(layer.bias, dtype=torch.float32))
                mods += [lin, _Act(layer.act, layer.alpha)]
            elif isinstance(layer, AvgPool):
                mods.append(nn.AvgPool2d(layer.kernel, layer.stride))
            elif isinstance(layer, Flatten):
                mods.append(nn.Flatten())
            elif isinstance(layer, Unflatten):
                mods.append(nn.Unflatten(1, tuple(layer.shape)))
            elif isinstance(layer, Activation):
                mods.append(_Act(layer.act, layer.alpha))
            elif not isinstance(layer, Softmax):
                raise TypeError(f"no torch equivalent for {type(layer).__name__}")
        self.body = nn.Sequential(*mods)

    def forward(self, x):
        return self.body(x.reshape((len(x),) + self.input_shape))

    def reset(self) -> TorchNet:
        """Re-initialise every parameter (the from-scratch baseline)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        return self


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int, batch: int = 32, lr: float = 1e-3,
          seed: int = 0, loss=F.cross_entropy, target_dtype: torch.dtype = torch.long) -> nn.Module:
    """Adam on `loss` (cross-entropy by default) for a fixed number of steps over (x, y), minibatches
    drawn with replacement."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=target_dtype)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(xt), (min(batch, len(xt)),), generator=gen)
        opt.zero_grad()
        loss(model(xt[idx]), yt[idx]).backward()
        opt.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = model(torch.tensor(x, dtype=torch.float32)).argmax(1).numpy()
    return float(np.mean(pred == np.asarray(y)))
