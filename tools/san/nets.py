"""Networks: the SAN prototype autoencoder and the small auxiliary classifier / face embedder."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEAK = 0.2


class PrototypeAutoencoder(nn.Module):
    """The SAN autoencoder (Mirjalili et al. 2018), sized for small images.

    Input: an image (C channels) concatenated with a prototype (C channels). Encoder: conv3x3 + LeakyReLU
    + AvgPool2, twice; decoder: conv3x3 + LeakyReLU + nearest upsample x2, twice. The shared 1x1 output
    head sees concat(decoder features, prototype) and ends in a sigmoid, so running the decoder once and
    the head with two prototypes gives X_SM (same-attribute prototype) and X_OP (opposite prototype).
    Height and width must be multiples of 4.
    """

    def __init__(self, channels: int = 3, enc: tuple[int, int] = (8, 12), dec: tuple[int, int] = (64, 32)):
        super().__init__()
        self.channels = channels
        self.widths = {"enc": list(enc), "dec": list(dec)}
        self.enc1 = nn.Conv2d(2 * channels, enc[0], 3, padding=1)
        self.enc2 = nn.Conv2d(enc[0], enc[1], 3, padding=1)
        self.dec1 = nn.Conv2d(enc[1], dec[0], 3, padding=1)
        self.dec2 = nn.Conv2d(dec[0], dec[1], 3, padding=1)
        self.head = nn.Conv2d(dec[1] + channels, channels, 1)

    def features(self, x: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
        """Decoder features for image x given its input prototype (both N,C,H,W)."""
        h = F.avg_pool2d(F.leaky_relu(self.enc1(torch.cat([x, prototype], 1)), LEAK), 2)
        h = F.avg_pool2d(F.leaky_relu(self.enc2(h), LEAK), 2)
        h = F.interpolate(F.leaky_relu(self.dec1(h), LEAK), scale_factor=2, mode="nearest")
        return F.interpolate(F.leaky_relu(self.dec2(h), LEAK), scale_factor=2, mode="nearest")

    def render(self, features: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
        """The shared output head: sigmoid(conv1x1(concat(features, prototype)))."""
        return torch.sigmoid(self.head(torch.cat([features, prototype], 1)))

    def change(self, x: torch.Tensor, prototype: torch.Tensor) -> torch.Tensor:
        """The head's linear output with `prototype` in the encoder and the head: the label-free stage's change
        (model_io CHANGES), added to the image as it is (no sigmoid, no reconstruction)."""
        return self.head(torch.cat([self.features(x, prototype), prototype], 1))

    def forward(self, x: torch.Tensor, same: torch.Tensor, opposite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X_SM, X_OP): the encoder sees the same-attribute prototype, the head runs with both."""
        h = self.features(x, same)
        return self.render(h, same), self.render(h, opposite)


class ConvNet(nn.Module):
    """A small CNN: conv5x5 then conv3x3 blocks with max-pooling, global average pool, dropout, linear.

    Used as the auxiliary gender classifier (out=2), the face embedder (out=embedding size) and the
    MNIST classifiers of the tests.
    """

    def __init__(self, in_channels: int, out: int, widths: tuple[int, ...] = (16, 32, 64, 96), dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(prev, width, 5 if i == 0 else 3, padding=2 if i == 0 else 1),
                       nn.BatchNorm2d(width), nn.LeakyReLU(LEAK)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = width
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.body(x).mean(dim=(2, 3))))


class FaceEmbedder(nn.Module):
    """A trainable face matcher: ConvNet trunk -> L2-normalised embedding."""

    def __init__(self, in_channels: int = 3, dim: int = 128):
        super().__init__()
        self.net = ConvNet(in_channels, dim, widths=(16, 32, 64, 128), dropout=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(x), dim=1)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the auxiliary networks are never trained against the SAN."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
