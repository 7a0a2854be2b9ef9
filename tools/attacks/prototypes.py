"""Prototype key profiles that keys/generate.py cannot express yet, provisioned here only to measure them.

'scatter<s>': the full profile, but the sensor key mixes random groups of s pixels (scattered over the
frame) instead of contiguous tiles, then permutes. Contiguous tiles keep the tile arrangement visible
to the structure attack; scattered groups do not form a grid at all. To ship it, keys/generate.py
needs a KeyConfig option for the mixing groups (see the attack report).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from keys.drbg import Drbg
from keys.factors import Bias, Gain, Key, Permutation, TileMix
from keys.generate import KeyConfig, gains
from keys.keyset import KeySet
from tools.ir import Network
from tools.keying.keyed import derive_keyset, key_network, verify_keyed
from tools.keying.provision import adc8, model_metadata
from tools.tflite.writer import write_tflite


@dataclass(frozen=True)
class Prototype:
    base: str                  # the shipped profile whose layer keys it keeps
    group: int                 # pixels per scattered mixing group
    mix_weight: float = 0.55
    mix_terms: int = 4
    description: str = ""


PROTOTYPES: dict[str, Prototype] = {
    "scatter2": Prototype("full", 2, description="prototype: full + mixing of scattered pixel pairs"),
    "scatter4": Prototype("full", 4, description="prototype: full + mixing of scattered groups of 4 pixels"),
}


def scattered_sensor_key(rng: Drbg, n: int, proto: Prototype, config: KeyConfig) -> Key:
    """Mix random groups of `proto.group` pixels (doubly stochastic), permute, gain, bias; maps [0,1] into [0,1]."""
    if n % proto.group:
        raise ValueError(f"{n} pixels do not split into groups of {proto.group}")
    groups = rng.child("groups").permutation(n).reshape(-1, proto.group)
    eye = np.eye(proto.group)
    rest = (1.0 - proto.mix_weight) / proto.mix_terms
    mats = np.empty((len(groups), proto.group, proto.group))
    perms = rng.child("mix")
    for k in range(len(groups)):
        mats[k] = proto.mix_weight * eye[perms.permutation(proto.group)]
        for _ in range(proto.mix_terms):
            mats[k] += rest * eye[perms.permutation(proto.group)]
    g = gains(rng.child("gain"), n, config.gain_range)
    b = rng.child("bias").uniform(n, 0.0, config.bias_max)
    scale = 1.0 / np.max(g + b)
    return Key(n, [TileMix(groups, mats), Permutation(rng.child("perm").permutation(n)), Gain(g * scale),
                   Bias(b * scale)], "sensor")


def prototype_keyset(name: str, secret: bytes, device_id: str, model_id: str, net: Network) -> KeySet:
    """The base profile's key set with the prototype's sensor key."""
    from tools.keying.profiles import get_profile
    proto = PROTOTYPES[name]
    keyset = derive_keyset(secret, device_id, model_id, net, proto.base)
    n = int(np.prod(net.input_shape))
    keyset.sensor = scattered_sensor_key(Drbg(secret, f"prototype/{name}/{device_id}"), n, proto,
                                         get_profile(proto.base).sensor)
    keyset.profile = name
    return keyset


def provision_prototype(name: str, net: Network, secret: bytes, device_id: str, model_id: str,
                        calib: np.ndarray) -> tuple[KeySet, bytes]:
    """Key the network with a prototype key set, check it in float and write the int8 .tflite."""
    keyset = prototype_keyset(name, secret, device_id, model_id, net)
    keyed = key_network(net, keyset)
    verify_keyed(net, keyed, keyset, calib[:50])
    meta = model_metadata(net, keyset, "keyed")
    blob, _ = write_tflite(keyed, int8=True, calib=adc8(keyset.sensor.apply(calib)) / 255.0,
                           metadata={**meta, "quantization": "int8"})
    return keyset, blob
