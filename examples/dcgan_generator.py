"""A DCGAN generator (Radford et al., 2016): a 100-d noise vector to a 64x64 RGB image.

Transposed convs double the resolution at each step (1 -> 4 -> 8 -> 16 -> 32 -> 64) while the
channels shrink; BatchNorm and ReLU between, tanh at the end, no pooling and no linear layer.

    archlint check examples/dcgan_generator.py
"""
import torch
from torch import nn

NOISE = 100


class Generator(nn.Module):
    def __init__(self, noise: int = NOISE, width: int = 64, channels: int = 3):
        super().__init__()

        def block(c_in: int, c_out: int, stride: int, padding: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]

        self.net = nn.Sequential(
            *block(noise, width * 8, 1, 0),
            *block(width * 8, width * 4, 2, 1),
            *block(width * 4, width * 2, 2, 1),
            *block(width * 2, width, 2, 1),
            nn.ConvTranspose2d(width, channels, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


model = Generator()
example_input = torch.randn(1, NOISE, 1, 1)
