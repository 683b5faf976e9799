"""Dataset names as NATS-Bench spells them, with their class counts and input sizes.

'cifar10' here is NATS-Bench's 'cifar10' entry: trained on the full 50k training set, tested on the
10k test set. NATS-Bench's separate 'cifar10-valid' entry (trained on a 25k half of the training
set) gives different accuracies and is deliberately not offered.
"""
from __future__ import annotations

from evaluation.errors import ZcpError

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "ImageNet16-120": 120}
IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "ImageNet16-120": 16}
DATASETS = tuple(NUM_CLASSES)


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known dataset, else raise a one-line error listing the known ones."""
    if name in NUM_CLASSES:
        return name
    hint = " ('cifar10-valid' is a different NATS-Bench entry and is not supported)" if name == "cifar10-valid" else ""
    raise ZcpError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}{hint}")
