"""A small image classifier with a few design choices archlint questions.

    archlint check examples/small_cnn.py
"""
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, kernel_size=7, stride=2, padding=3)  # one big kernel
        self.bn1 = nn.BatchNorm2d(32)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.down = nn.Conv2d(64, 128, kernel_size=1, stride=2, bias=False)  # skips 3 of 4 pixels
        self.bn3 = nn.BatchNorm2d(128)
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.pool(self.relu(self.bn1(self.stem(x))))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(self.bn3(self.down(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.head(x)


model = SmallCNN()
example_input = torch.randn(1, 3, 64, 64)
