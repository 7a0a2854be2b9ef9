"""Key profiles: which layers are spatially keyed, and how the sensor key is built."""
from __future__ import annotations

from dataclasses import dataclass, field

from base.errors import ConfigError
from keys.generate import KeyConfig


@dataclass(frozen=True)
class Profile:
    """A named trade-off between privacy and cost."""
    name: str
    spatial_layers: bool                 # True: every layer spatially keyed; False: only the stem
    sensor: KeyConfig = field(default_factory=KeyConfig)
    layers: KeyConfig = field(default_factory=KeyConfig)
    description: str = ""
    sensor_layout: str = "global"        # global: pixel-level key; patch: patch-aligned (tools.keying.patchkey)
    sensor_stage: bool = False           # the model's first layer undoes A0 (sparse int8), then the plain stem
    grouped_units: bool = False          # keys over all units keep a conv's channels of one position together
    #                                      (the sparsity pattern shows them anyway; int8 ELL then gathers once)


PROFILES: dict[str, Profile] = {
    "full": Profile("full", True, description="every layer spatially keyed (reference Key-Nets behaviour): "
                    "sparse keyed layers, larger and slower"),
    "stem": Profile("stem", False, description="only the input stem spatially keyed; hidden convs keep "
                    "per-channel keys and stay dense CONV_2D (fast, small; activations after the stem "
                    "are in plain spatial order)"),
    "tiled": Profile("tiled", True, sensor=KeyConfig(tile=4, mix_weight=0.55, mix_terms=4),
                     description="full + sensor mixing inside 4x4 tiles before the permutation: the "
                     "structure attack finds the tile arrangement but not the pixels inside a tile (~1.5x full)"),
    "tiled7": Profile("tiled7", True, sensor=KeyConfig(tile=7, mix_weight=0.55, mix_terms=4),
                      description="full + sensor mixing inside 7x7 tiles: a coarser leak, ~2.3x the full "
                      "profile's size"),
    "scatter2": Profile("scatter2", True, sensor=KeyConfig(scatter=2, mix_weight=0.55, mix_terms=4),
                        description="full + sensor mixing of random pairs of scattered pixels before the "
                        "permutation (~1.2x full)"),
    "scatter4": Profile("scatter4", True, sensor=KeyConfig(scatter=4, mix_weight=0.55, mix_terms=4),
                        description="full + sensor mixing inside random groups of 4 scattered pixels before the "
                        "permutation: the structure attack sees which keyed pixels share a group but no grid "
                        "(~1.5x full)"),
    "mix15": Profile("mix15", False, sensor_stage=True, sensor=KeyConfig(scatter=15, mixing="multiplex"),
                     description="for sealed models: a sensor key that multiplexes random groups of 15 scattered "
                     "pixels (each group its own secret 0/1 matrix, half ones, condition number <= 6) before the "
                     "global permutation, gains and bias; the model undoes it in one int8 sparse layer (it holds "
                     "A0^-1: seal it), then runs the stem profile's network (per-channel keys, dense int8 convs)"),
    "mix15x2": Profile("mix15x2", False, sensor_stage=True,
                       sensor=KeyConfig(scatter=15, mixing="multiplex", stages=2),
                       description="mix15 with two rounds of mixing and permutation (a keyed pixel sees ~57 "
                       "pixels; ~2.8x the unkeyed int8 latency and size)"),
    "stem-patch": Profile("stem-patch", False, sensor=KeyConfig(permutation="none"), sensor_layout="patch",
                          description="stem profile with a patch-aligned sensor permutation for patchify stems: "
                          "the keyed stem is an int8 GATHER + 1x1 conv (keyed frames keep whole patches; the .tflite shows "
                          "the patch arrangement)"),
}


DEFAULT_PROFILE = "mix15"    # the model is sealed: chosen against the frames-only attack at <= 2x unkeyed int8 cost


def get_profile(name: str | Profile) -> Profile:
    """Look up a profile by name with a clear error (a Profile passes through)."""
    if isinstance(name, Profile):
        return name
    if name not in PROFILES:
        raise ConfigError(f"unknown key profile {name!r}; choose one of: {', '.join(sorted(PROFILES))}")
    return PROFILES[name]
