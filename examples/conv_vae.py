"""A convolutional variational autoencoder for 64x64 RGB images.

The encoder halves the resolution four times (64 -> 4) and predicts the mean and log-variance
of a 128-d latent; the decoder mirrors it with transposed convs. `forward` returns the
reconstruction, the mean and the log-variance, as a training loop needs them for the ELBO.

    archlint check examples/conv_vae.py
"""
import torch
from torch import nn

LATENT = 128


def down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.2, inplace=True),
    )


def up(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ConvVAE(nn.Module):
    def __init__(self, channels: int = 3, latent: int = LATENT):
        super().__init__()
        self.encoder = nn.Sequential(down(channels, 32), down(32, 64), down(64, 128), down(128, 256))
        self.to_mu = nn.Linear(256 * 4 * 4, latent)
        self.to_logvar = nn.Linear(256 * 4 * 4, latent)
        self.from_latent = nn.Linear(latent, 256 * 4 * 4)
        self.decoder = nn.Sequential(
            up(256, 128), up(128, 64), up(64, 32),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x).flatten(1)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_latent(z).view(-1, 256, 4, 4))

    def forward(self, x: torch.Tensor):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterization trick
        return self.decode(z), mu, logvar


model = ConvVAE()
example_input = torch.randn(1, 3, 64, 64)
