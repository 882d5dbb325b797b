"""k networks as one batched module equal a loop of separate nn.Linear modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepcluster_cli.nn.batched import BatchedLinear, BatchedMLP
from deepcluster_cli.nn.mlp import mlp


def _loop_and_batched(k=3, dims=(7, 6, 4, 2), act="relu"):
    torch.manual_seed(0)
    nets = [mlp(list(dims), act=act) for _ in range(k)]
    return nets, BatchedMLP.from_sequentials(nets, act=act)


def test_batched_mlp_equals_loop_of_linear_modules_on_shared_rows():
    nets, batched = _loop_and_batched()
    x = torch.randn(5, 7)
    expected = torch.stack([net(x) for net in nets])  # (k, batch, out)
    torch.testing.assert_close(batched(x), expected, rtol=1e-5, atol=1e-6)


def test_batched_mlp_equals_loop_of_linear_modules_per_slice_rows_and_gradients():
    nets, batched = _loop_and_batched(act="elu")
    x = torch.randn(3, 5, 7)  # a different batch for each of the k networks
    w = torch.randn(3, 5, 2)  # a loss that weighs every output differently
    (torch.stack([net(x[i]) for i, net in enumerate(nets)]) * w).sum().backward()
    (batched(x) * w).sum().backward()
    for j, layer in enumerate(batched.layers):
        linears = [[m for m in net if isinstance(m, nn.Linear)][j] for net in nets]
        torch.testing.assert_close(layer.weight.grad, torch.stack([m.weight.grad for m in linears]))
        torch.testing.assert_close(layer.bias.grad, torch.stack([m.bias.grad for m in linears]))


def test_shared_input_equals_the_input_repeated_for_every_network():
    layer = BatchedLinear(4, 3, 2)
    x = torch.randn(6, 3)
    torch.testing.assert_close(layer.shared(x), layer(x.expand(4, -1, -1)))


def test_batched_linear_is_initialised_like_nn_linear():
    layer = BatchedLinear(5, 16, 8)
    bound = 1 / math.sqrt(16)
    assert layer.weight.shape == (5, 8, 16) and layer.bias.shape == (5, 8)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    # the k slices are drawn independently
    assert not torch.equal(layer.weight[0], layer.weight[1])
