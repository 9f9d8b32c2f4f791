"""A small network with Conv2d and Linear layers (one on 3-D tokens), in
float64, for curvature tests against dense exact answers."""

import torch
from torch import nn


class SmallNet(nn.Module):
    """Conv2d -> Linear on 3-D tokens [B, 16, 3] -> Linear, output [B, 3]."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, kernel_size=3, padding=1)
        self.token = nn.Linear(3, 4)
        self.head = nn.Linear(64, 3)

    def forward(self, x):
        h = torch.tanh(self.conv(x))  # [B, 3, 4, 4]
        tokens = h.flatten(2).transpose(1, 2)  # [B, 16, 3]
        h = torch.tanh(self.token(tokens))  # [B, 16, 4]
        return self.head(h.flatten(1))  # [B, 3]


NAMES = ["conv", "token", "head"]


def small_net_and_data(seed=0):
    torch.manual_seed(seed)
    model = SmallNet().double()
    data = [(torch.randn(5, 2, 4, 4, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)) for _ in range(3)]
    return model, data
