"""Factories for the dataset runner's tests (``python -m attrfx run --model _runs_data:model ...``).

The model counts its forward calls in :data:`CALLS` (outside the model, so its identity is unchanged) and, where
``ATTRFX_TEST_SLEEP`` is set, sleeps that many seconds per call: slow enough to kill a run between chunks.
"""

import os
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

CALLS = [0]
model_seed = [0]  # a test sets another seed to make another model of the same type
EXAMPLES, FEATURES, CLASSES = 48, 6, 3


class Net(nn.Module):
    """``[N, 6] → 3`` logits: linear, tanh, linear (float64)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(FEATURES, 5), nn.Tanh(), nn.Linear(5, CLASSES)

    def forward(self, x):
        CALLS[0] += 1
        time.sleep(float(os.environ.get("ATTRFX_TEST_SLEEP", "0")))
        return self.fc2(self.act(self.fc1(x)))


def model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_seed[0])
        return Net().double().eval()


def data():
    """48 examples with labels 0..2 (a TensorDataset: batched by --batch-size)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(EXAMPLES, FEATURES, generator=generator, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (EXAMPLES,), generator=generator)
    return TensorDataset(x, y)


def batches(size=4):
    """The same examples as a list of ``(inputs, labels)`` batches."""
    x, y = data().tensors
    return list(zip(x.split(size), y.split(size)))
