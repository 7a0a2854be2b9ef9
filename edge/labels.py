"""Class names of the datasets keycam models are trained on: a model that names its dataset but
embeds no label names still gets readable records (edge.service.output_policy)."""
from __future__ import annotations

FASHION_LABELS = ("t-shirt/top", "trouser", "pullover", "dress", "coat",
                  "sandal", "shirt", "sneaker", "bag", "ankle boot")
MNIST_LABELS = tuple(str(d) for d in range(10))


def labels_for(name: str) -> tuple[str, ...]:
    """Human-readable class names of a dataset (mnist | fashion)."""
    return FASHION_LABELS if name == "fashion" else MNIST_LABELS
