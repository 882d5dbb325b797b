"""k networks as one module: weights stacked on a leading k axis, one ``bmm`` per layer.

A mixture of k autoencoders (k-DVAE, k-DAE) evaluates every pair on every row. Written as a
Python loop over k ``nn.Linear`` stacks that is 2k small matrix products per layer and 2k
autograd graphs; here each layer is one batched product over a ``(k, batch, width)`` tensor.
The first layer of an encoder sees the same rows for every network, so it is a single
``(batch, D) @ (D, k * width)`` product (:meth:`BatchedLinear.shared`).

Where each row needs one network only (the winning pair of a hard-max loss), evaluating all k
wastes k - 1 networks' forward and backward; :meth:`BatchedLinear.grouped` runs every network
on its own rows alone (rows sorted by network, one product per network and layer).

Each of the k slices is initialised exactly like a fresh ``nn.Linear`` (uniform in
``+-1/sqrt(fan_in)``), and :meth:`BatchedLinear.from_linears` stacks existing modules, so a
batched network and a loop of separate modules with the same weights agree numerically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deepcluster_cli.nn.mlp import activation


class BatchedLinear(nn.Module):
    """k independent ``nn.Linear(d_in, d_out)`` layers: ``y[i] = x[i] @ W[i].T + b[i]``."""

    def __init__(self, k: int, d_in: int, d_out: int):
        super().__init__()
        self.k, self.d_in, self.d_out = k, d_in, d_out
        self.weight = nn.Parameter(torch.empty(k, d_out, d_in))  # (k, out, in) like nn.Linear
        self.bias = nn.Parameter(torch.empty(k, d_out))  # (k, out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        bound = 1.0 / math.sqrt(self.d_in)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """``x``: (k, batch, in) -> (k, batch, out)."""
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))

    def shared(self, x: Tensor) -> Tensor:
        """The same rows into all k layers: ``x`` (batch, in) -> (k, batch, out), one GEMM."""
        w = self.weight.reshape(self.k * self.d_out, self.d_in)  # (k * out, in)
        y = torch.addmm(self.bias.reshape(-1), x, w.t())  # (batch, k * out)
        return y.view(len(x), self.k, self.d_out).transpose(0, 1)

    def grouped(self, x: Tensor, counts: Sequence[int]) -> Tensor:
        """Rows sorted by network, each through its own layer only: the first ``counts[0]`` rows
        of ``x`` (n, in) through layer 0, the next ``counts[1]`` through layer 1, ... -> (n, out).

        Forward and backward cost one layer per row, not k. ``counts``: k plain ints."""
        # unbind, not weight[i]: its backward stacks the k slices' gradients into one (k, out,
        # in) tensor (zeros where a layer got no rows), where indexing would add k full-size ones
        weights, biases = self.weight.unbind(0), self.bias.unbind(0)
        parts = [
            F.linear(rows, weights[i], biases[i])
            for i, rows in enumerate(x.split(list(counts)))
            if len(rows)
        ]
        return torch.cat(parts)  # (n, out)

    @classmethod
    def from_linears(cls, linears: Sequence[nn.Linear]) -> BatchedLinear:
        """Stack k ``nn.Linear`` modules of one shape into a batched layer (weights copied)."""
        first = linears[0]
        layer = cls(len(linears), first.in_features, first.out_features)
        with torch.no_grad():
            layer.weight.copy_(torch.stack([m.weight for m in linears]))
            layer.bias.copy_(torch.stack([m.bias for m in linears]))
        return layer.to(first.weight.device)

    def extra_repr(self) -> str:
        return f"k={self.k}, in_features={self.d_in}, out_features={self.d_out}"


class BatchedMLP(nn.Module):
    """k MLPs ``dims[0] -> ... -> dims[-1]``; ``act`` after every layer but the last.

    Input (batch, dims[0]) shared by all k networks, or (k, batch, dims[0]) one slice each;
    output (k, batch, dims[-1]). With ``counts`` (see :meth:`BatchedLinear.grouped`): input
    (n, dims[0]) rows sorted by network, each row through its own network only -> (n, dims[-1]).
    """

    def __init__(self, k: int, dims: Sequence[int], *, act: str = "relu"):
        super().__init__()
        self.k = k
        self.layers = nn.ModuleList(
            BatchedLinear(k, d_in, d_out) for d_in, d_out in zip(dims[:-1], dims[1:], strict=True)
        )
        self.act = activation(act)

    def forward(self, x: Tensor, counts: Sequence[int] | None = None) -> Tensor:
        for i, layer in enumerate(self.layers):
            if counts is not None:
                x = layer.grouped(x, counts)
            else:
                x = layer.shared(x) if x.ndim == 2 else layer(x)
            if i < len(self.layers) - 1:
                x = self.act(x)
        return x

    @classmethod
    def from_sequentials(cls, nets: Sequence[nn.Sequential], *, act: str = "relu") -> BatchedMLP:
        """Stack k ``mlp(...)`` networks of one architecture (weights copied)."""
        linears = [[m for m in net if isinstance(m, nn.Linear)] for net in nets]
        dims = [linears[0][0].in_features] + [m.out_features for m in linears[0]]
        out = cls(len(nets), dims, act=act)
        out.layers = nn.ModuleList(
            BatchedLinear.from_linears([ls[j] for ls in linears]) for j in range(len(dims) - 1)
        )
        return out
