"""Training of the auxiliary (seen) networks: a binary attribute classifier and a face embedder."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from tools.san.augment import augment
from tools.san.data import balanced_epoch
from tools.san.memo import CACHE_ROOT, digest, memoised
from tools.san.nets import ConvNet, FaceEmbedder, freeze


def batches(order: np.ndarray, size: int):
    """Consecutive slices of `size` indices of `order` (the last may be shorter)."""
    for start in range(0, len(order), size):
        yield order[start:start + size]


M = TypeVar("M", bound=nn.Module)


def seeded(make: Callable[[], M], seed: int) -> M:
    """`make()` with torch's global generator seeded by `seed`, so a network's initial weights depend on its seed
    only, not on what ran before it (e.g. whether a memoised network was loaded or trained)."""
    torch.manual_seed(seed)
    return make()


def train_binary_classifier(make: Callable[[], nn.Module], images: np.ndarray, labels: np.ndarray, *, epochs: int,
                            batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                            augmentations: tuple[str, ...] = (), desc: str = "classifier") -> nn.Module:
    """Train the network `make()` builds (2 logits; initial weights from `seed`) on float images (N,C,H,W) with
    labels in {0,1}, balanced per epoch; frozen after."""
    model = seeded(make, seed)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()
    for epoch in range(epochs):
        order = balanced_epoch(labels, rng)
        bar = tqdm(list(batches(order, batch_size)), desc=f"{desc} {epoch + 1}/{epochs}", leave=False)
        for idx in bar:
            x = augment(x_all[idx], augmentations, gen)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return freeze(model)


def train_face_embedder(images: np.ndarray, identity: np.ndarray, *, epochs: int, dim: int = 128,
                        batch_size: int = 64, lr: float = 2e-3, seed: int = 0, scale: float = 16.0,
                        margin: float = 0.2, augmentations: tuple[str, ...] = ("flip", "geometry"),
                        desc: str = "matcher") -> FaceEmbedder:
    """Train an L2-normalised embedder with a CosFace (large-margin cosine) identity head; frozen after."""
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    _, ids = np.unique(identity, return_inverse=True)
    model = seeded(lambda: FaceEmbedder(images.shape[1], dim), seed)
    centres = nn.Parameter(torch.randn(int(ids.max()) + 1, dim) * 0.01)
    opt = torch.optim.Adam(list(model.parameters()) + [centres], lr=lr, weight_decay=1e-4)
    x_all, y_all = torch.from_numpy(images), torch.from_numpy(ids.astype(np.int64))
    model.train()
    for epoch in range(epochs):
        bar = tqdm(list(batches(rng.permutation(len(ids)), batch_size)), desc=f"{desc} {epoch + 1}/{epochs}",
                   leave=False)
        for idx in bar:
            emb = model(augment(x_all[idx], augmentations, gen))
            cos = emb @ F.normalize(centres, dim=1).T
            logits = scale * (cos - margin * F.one_hot(y_all[idx], cos.shape[1]))
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return freeze(model)


def linear_probe(features: np.ndarray, labels: np.ndarray, weight_decay: float = 1e-3) -> Callable[[np.ndarray], np.ndarray]:
    """A class-balanced, L2-regularised logistic regression on standardised features (N, D) with labels in {0,1},
    fitted by L-BFGS; returns features -> predicted label."""
    mean, std = features.mean(0), features.std(0) + 1e-6
    x, y = torch.from_numpy((features - mean) / std).float(), torch.from_numpy(labels.astype(np.int64))
    torch.manual_seed(0)
    linear = nn.Linear(x.shape[1], 2)
    weight = len(y) / (2 * torch.bincount(y, minlength=2).clamp_min(1).float())
    opt = torch.optim.LBFGS(linear.parameters(), max_iter=200)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(linear(x), y, weight=weight) + weight_decay * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    freeze(linear)
    return lambda f: predict(linear, ((f - mean) / std).astype(np.float32)).argmax(1)


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Model outputs for float images (N,C,H,W), batched, as a numpy array."""
    outs = [model(torch.from_numpy(images[i:i + batch_size])) for i in range(0, len(images), batch_size)]
    return torch.cat(outs).numpy()


AUX_CACHE = CACHE_ROOT / "san-aux"


def _load_into(make: Callable[[], nn.Module]) -> Callable[[Path], nn.Module]:
    def load(path: Path) -> nn.Module:
        model = make()
        model.load_state_dict(torch.load(path, weights_only=True))
        return freeze(model)
    return load


def _save_weights(model: nn.Module, file: BinaryIO) -> None:
    torch.save(model.state_dict(), file)


def cached_model(make: Callable[[], nn.Module], train: Callable[[], nn.Module], recipe: str, images: np.ndarray,
                 labels: np.ndarray, cache_dir: Path | None = AUX_CACHE) -> nn.Module:
    """`train()`'s frozen model, memoised on disk under the hash of `recipe` (everything that decides the
    training, in words), the training images and their labels; `make()` builds the empty model to load a memo into."""
    key = digest(recipe.encode(), images.tobytes(), np.ascontiguousarray(labels).tobytes())
    return memoised(cache_dir, f"{key}.pt", train, _load_into(make), _save_weights)


def gender_cnn(images: np.ndarray, labels: np.ndarray, *, epochs: int, seed: int, augmentations: tuple[str, ...],
               desc: str, cache_dir: Path | None = AUX_CACHE) -> nn.Module:
    """A gender classifier ConvNet(3, 2) trained by `train_binary_classifier` on float images (N,3,H,W) with
    labels 1 male / 0 female, memoised by `cached_model` (so every run reads with the same network)."""
    recipe = (f"gender ConvNet(3, 2), train_binary_classifier, {epochs} epochs, seed {seed} (initial weights too), "
              f"augmentations {tuple(augmentations)}")
    return cached_model(lambda: ConvNet(3, 2), lambda: train_binary_classifier(
        lambda: ConvNet(3, 2), images, labels, epochs=epochs, seed=seed, augmentations=augmentations, desc=desc),
        recipe, images, labels, cache_dir)
