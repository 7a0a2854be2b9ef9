"""Per-channel keys inside the SAN stage, folded into its weights (like the `stem` key profile's hidden layers).

Every hidden activation of the autoencoder (enc1, enc2, dec1, dec2 outputs) gets a positive generalized
channel permutation (output channel c = gain[c] * channel perm[c], keys.factors.ChannelGenPerm semantics).
Such keys commute with LeakyReLU, average pooling and nearest upsampling, so each conv keeps being a dense
conv: W'[o, i] = g_out[o] W[p_out[o], p_in[i]] / g_in[i], b'[o] = g_out[o] b[p_out[o]]. The image/prototype
input of enc1 and the 3-channel head output stay in plain channel order (the sigmoid admits no gain; the
head undoes the last key). The keyed autoencoder computes the same X_SM / X_OP as the original.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from keys.drbg import Drbg
from keys.generate import KeyConfig, gains
from tools.san.nets import PrototypeAutoencoder

HIDDEN = ("enc1", "enc2", "dec1", "dec2")


@dataclass(frozen=True)
class ChannelKey:
    """Output channel c of the keyed layer = gain[c] * channel perm[c] of the plain layer."""

    perm: np.ndarray
    gain: np.ndarray


def derive_channel_keys(secret: bytes, label: str, member: PrototypeAutoencoder,
                        config: KeyConfig = KeyConfig()) -> dict[str, ChannelKey]:
    """One key per hidden conv output, from a 256-bit secret (deterministic for a given secret and label)."""
    root = Drbg(secret, f"san-channels/{label}")
    return {name: ChannelKey(root.child(f"{name}/perm").permutation(getattr(member, name).out_channels),
                             gains(root.child(f"{name}/gain"), getattr(member, name).out_channels, config.gain_range))
            for name in HIDDEN}


@torch.no_grad()
def key_member(member: PrototypeAutoencoder, keys: dict[str, ChannelKey]) -> PrototypeAutoencoder:
    """A copy of `member` whose hidden activations carry `keys` (same outputs up to float rounding)."""
    keyed = copy.deepcopy(member).eval()
    previous: ChannelKey | None = None
    for name in HIDDEN:
        conv, key = getattr(keyed, name), keys[name]
        p, g = torch.from_numpy(key.perm), torch.from_numpy(key.gain).to(conv.weight.dtype)
        w = conv.weight[p]
        if previous is not None:
            w = w[:, torch.from_numpy(previous.perm)] / torch.from_numpy(previous.gain).to(w.dtype)[None, :, None, None]
        conv.weight.copy_(g[:, None, None, None] * w)
        conv.bias.copy_(g * conv.bias[p])
        previous = key
    features = keyed.head.weight.shape[1] - keyed.channels
    head = keyed.head.weight.clone()
    scale = torch.from_numpy(previous.gain).to(head.dtype)[None, :, None, None]
    head[:, :features] = keyed.head.weight[:, torch.from_numpy(previous.perm)] / scale
    keyed.head.weight.copy_(head)
    return keyed
