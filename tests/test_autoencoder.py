"""``Autoencoder.scale_codes``: an exact reparametrisation of the code space."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from deepcluster_cli.nn.mlp import AEConfig, Autoencoder


@pytest.mark.parametrize("variational", [False, True])
def test_scale_codes_scales_the_codes_and_keeps_the_reconstructions(variational):
    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(n_features=6, arch=(8,), latent=3, variational=variational))
    x = torch.rand(5, 6)
    with torch.no_grad():
        mu, logvar = ae.encode_stats(x)
        out = ae.reconstruct(ae.encode(x))
        ae.scale_codes(0.25)
        mu2, logvar2 = ae.encode_stats(x)
        assert_close(mu2, 0.25 * mu)
        assert_close(ae.reconstruct(ae.encode(x)), out)
        if variational:  # the variance of 0.25 z is 0.25^2 that of z
            assert_close(logvar2, logvar + 2 * torch.log(torch.tensor(0.25)))
    with pytest.raises(ValueError, match="positive"):
        ae.scale_codes(0.0)
