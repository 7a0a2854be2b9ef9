"""Which key every op admits, stated once, and the key plan of a network (DAG) under a profile.

Keys live on tensors. Tensors that must carry one key form a class (union-find): an op that passes its
key joins its output to its input's class; an Add joins its inputs and output; a linear op (Conv, Dense,
and under unit keys AvgPool / Resize) starts a fresh class on its output (its weights absorb both keys).
A class's key is one of: the sensor key (the network input), the output key or none (the network
output), fresh (generated: a positive generalized permutation, per channel or over all units), derived
(a Concat's block-diagonal key from its inputs' keys; a depthwise conv's per-channel key, which keeps its
input's channel permutation and draws fresh gains).

Modes: a class is `channel` (one permutation and gain per channel, the same at every position: convs
stay convs) when the profile keys hidden layers per channel and its tensors are (C, H, W); otherwise
`unit` (a generalized permutation over all C*H*W units: layers become sparse matrices).

RULES maps each layer type to what its input key must admit:
  any        - absorbed by the weights (linear ops), or moved along unchanged (Flatten)
  linear     - no offset (Add: K(a) + K(b) = K(a + b) only for linear K)
  positive   - positive generalized permutation (ReLU, LeakyReLU, PReLU whose slopes move with their units)
  permute    - a permutation, gains 1 (Sigmoid, Clip: no gain commutes with them)
  channel    - a per-channel key over plain spatial order, which maps every pooling window onto a window
               with one gain (MaxPool; a key scrambling positions across windows admits no max pool)
  none       - no key at all (Softmax, unless output encryption replaces it)
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from base.errors import KeycamError
from keys.factors import ChannelGenPerm, Key
from keys.profiles import Profile
from tools.ir import INPUT, Activation, Add, AvgPool, Concat, Conv, Dense, Flatten, MaxPool, Network, Resize, Shift, Softmax
from tools.keying.genperm import genperm_form

NEEDS_ORDER = ("any", "linear", "positive", "permute", "channel", "none")


class KeyingError(KeycamError):
    """The network cannot be keyed as asked, or the keyed network does not match the original."""


@dataclass(frozen=True)
class Rule:
    """How an op treats keys: `role` fresh | pass | merge | concat | spatial (pass under channel keys,
    fresh under unit keys); `needs` what its input key must admit (see the module doc)."""
    role: str
    needs: str = "any"


def rule_of(layer) -> Rule:
    """The one place that says which key each op admits."""
    if isinstance(layer, (Conv, Dense)):
        return Rule("fresh")
    if isinstance(layer, (AvgPool, Resize)):
        return Rule("spatial")
    if isinstance(layer, MaxPool):
        return Rule("pass", "channel")
    if isinstance(layer, Activation):
        return Rule("pass", "permute" if layer.act in ("sigmoid", "clip") else "positive")
    if isinstance(layer, Add):
        return Rule("merge", "linear")
    if isinstance(layer, Concat):
        return Rule("concat")
    if isinstance(layer, (Flatten, Shift)):
        return Rule("pass")                  # a shift moves with the key: K(x + c) = K(x) + L c
    if isinstance(layer, Softmax):
        return Rule("pass", "none")
    raise KeyingError(f"layer {layer.name or type(layer).__name__!r} (op {type(layer).__name__}) has no keying rule")


def fused_needs(layer) -> str:
    """What a Conv / Dense's fused activation asks of its output key."""
    return "positive" if getattr(layer, "act", "none") != "none" else "any"


def _where(net: Network, i: int) -> str:
    layer = net.layers[i]
    return f"node {layer.name or f'#{i}'!r} (op {type(layer).__name__})"


@dataclass
class KeyClass:
    """Tensors sharing one key."""
    members: list[int]
    mode: str                                  # channel | unit
    source: tuple = ("fresh",)                 # ("fresh", layer) | ("input",) | ("output",) | ("concat", layer)
    #                                            | ("depthwise", layer)
    needs: dict[str, int] = field(default_factory=dict)     # need -> a layer that asks for it (for errors)

    @property
    def generated(self) -> bool:
        return self.source[0] in ("fresh", "depthwise")


class KeyPlan:
    """The key classes of `net` under `profile`; `output_key` says whether an output key (dense) replaces
    the final softmax and keys the logits; `output_from_input`: the output carries the input's key (a stage
    whose output feeds the next model, keyed like its input)."""

    def __init__(self, net: Network, profile: Profile, output_key: bool = False, output_from_input: bool = False):
        self.net, self.profile, self.output_key = net, profile, output_key
        self.output_from_input = output_from_input
        self.shapes = {INPUT: tuple(net.input_shape), **dict(enumerate(net.shapes()))}
        self.parent: dict[int, int] = {}
        self.classes: dict[int, KeyClass] = {}
        last = len(net.layers) - 1
        self.logits = net.inputs_of(last)[0] if isinstance(net.layers[last], Softmax) else last
        self._build()

    # -- union-find ------------------------------------------------------------------------------
    def find(self, t: int) -> int:
        while self.parent[t] != t:
            self.parent[t] = self.parent[self.parent[t]]
            t = self.parent[t]
        return t

    def key_class(self, t: int) -> KeyClass:
        return self.classes[self.find(t)]

    def _new(self, t: int, mode: str, source: tuple) -> None:
        self.parent[t] = t
        self.classes[t] = KeyClass([t], mode, source)

    def _join(self, t: int, into: int, at: int) -> None:
        a, b = self.find(t), self.find(into)
        if a == b:
            return
        ca, cb = self.classes.pop(a), self.classes[b]
        fixed = [c.source for c in (ca, cb) if c.source[0] != "fresh"]
        if len(fixed) > 1:
            raise KeyingError(f"{_where(self.net, at)}: joins tensors whose keys are fixed independently "
                              f"({fixed[0][0]} and {fixed[1][0]}); no single key fits both under profile "
                              f"{self.profile.name}")
        if ca.mode != cb.mode and "output" not in (ca.source[0], cb.source[0]):
            raise KeyingError(f"{_where(self.net, at)}: joins a per-channel key with a key over all units "
                              f"under profile {self.profile.name}")
        self.parent[a] = b
        cb.members += ca.members
        cb.source = fixed[0] if fixed else cb.source
        cb.mode = ca.mode if ca.source[0] == "output" else cb.mode
        for need, layer in ca.needs.items():
            cb.needs.setdefault(need, layer)

    def _need(self, t: int, need: str, at: int) -> None:
        if need != "any":
            self.key_class(t).needs.setdefault(need, at)

    # -- building --------------------------------------------------------------------------------
    def _mode(self, t: int) -> str:
        return "channel" if not self.profile.spatial_layers and len(self.shapes[t]) == 3 else "unit"

    def _build(self) -> None:
        net = self.net
        self._new(INPUT, "channel" if self.profile.sensor_stage else "unit", ("input",))
        for i, layer in enumerate(net.layers):
            ins = net.inputs_of(i)
            rule = rule_of(layer)
            for j in ins:
                self._need(j, rule.needs, i)
            role = rule.role
            if role == "spatial":
                role = "pass" if self.key_class(ins[0]).mode == "channel" and len(self.shapes[ins[0]]) == 3 \
                    else "fresh"
            if role == "fresh":
                source = ("fresh", i)
                if isinstance(layer, Conv) and layer.depthwise and self.key_class(ins[0]).mode == "channel" \
                        and self._mode(i) == "channel":
                    source = ("depthwise", i)
                self._new(i, self._mode(i), source)
                self._need(i, fused_needs(layer), i)
            elif role == "pass":
                self.parent[i] = i
                self.classes[i] = KeyClass([i], self.key_class(ins[0]).mode, ("fresh", i))
                self._join(i, ins[0], i)
            elif role == "merge":
                self.parent[i] = i
                self.classes[i] = KeyClass([i], self.key_class(ins[0]).mode, ("fresh", i))
                for j in ins:
                    self._join(j, i, i)
            else:                                    # concat
                modes = {self.key_class(j).mode for j in ins}
                self._new(i, modes.pop() if len(modes) == 1 else "unit", ("concat", i))
        self._fix_output()
        self._propagate_concat_needs()
        self._check()

    def _fix_output(self) -> None:
        t = self.logits
        c = self.key_class(t)
        last = len(self.net.layers) - 1
        if self.output_from_input:
            if c.source[0] != "input":
                raise KeyingError(f"{_where(self.net, last)}: the output must carry the input's key (its class "
                                  f"is {c.source[0]}) under profile {self.profile.name}")
            return
        if c.source[0] != "fresh":
            raise KeyingError(f"{_where(self.net, t if t != INPUT else last)}: the network output shares its key "
                              f"with the {c.source[0]} under profile {self.profile.name}; the output must be "
                              "unkeyed (or carry the output key)")
        c.source = ("output",)
        if t != last:                   # the final softmax: its input is the logits, unkeyed or dropped
            c.needs.pop("none", None)

    def _propagate_concat_needs(self) -> None:
        for i in range(len(self.net.layers) - 1, -1, -1):
            c = self.key_class(i)
            if c.source == ("concat", i):
                for j in self.net.inputs_of(i):
                    for need, at in c.needs.items():
                        self._need(j, need, at)

    def _check(self) -> None:
        """Every class's key admits what its readers need (generated keys are drawn to fit; fixed ones are
        checked in `check_fixed`)."""
        for c in self.classes.values():
            for need, at in c.needs.items():
                if need == "channel" and c.mode != "channel" and c.source[0] != "output":
                    raise KeyingError(f"{_where(self.net, at)} admits no key under profile {self.profile.name}: "
                                      "it needs a per-channel key over plain spatial order (pooling windows onto "
                                      "windows), and its input is keyed over all units")
                if need == "none" and c.source[0] != "output":
                    raise KeyingError(f"{_where(self.net, at)} admits no key under profile {self.profile.name}: "
                                      "softmax must read the unkeyed network output")

    def check_fixed(self, t: int, key: Key | None) -> None:
        """Raise unless the fixed key `key` (None: no key) of tensor t's class admits its readers' needs."""
        c = self.key_class(t)
        if key is None:
            return
        g = genperm_form(key)
        for need, at in c.needs.items():
            ok = {"any": True,
                  "linear": not np.any(key.offset()),
                  "positive": g is not None and not np.any(g.offset) and bool(np.all(g.scale > 0)),
                  "permute": g is not None and not np.any(g.offset) and bool(np.all(g.scale == 1)),
                  "channel": len(key.factors) == 1 and isinstance(key.factors[0], ChannelGenPerm),
                  "none": False}[need]
            if not ok:
                raise KeyingError(f"{_where(self.net, at)} admits no key under profile {self.profile.name}: it "
                                  f"needs a {need} key and its input carries the {c.source[0]} key")

    def channel_keyed(self, t: int) -> bool:
        """Tensor t is (C, H, W) under a per-channel key (or none), so ops on it stay spatial."""
        c = self.key_class(t)
        return len(self.shapes[t]) == 3 and c.mode == "channel" and not (self.output_key and c.source[0] == "output")

    def sparse_layers(self) -> list[int]:
        """Layers keyed as sparse matrices: linear ops whose input or output key is not per channel (a patch
        stem under a patch-aligned sensor key aside: the caller knows the profile)."""
        out = []
        for i, layer in enumerate(self.net.layers):
            role, j = rule_of(layer).role, self.net.inputs_of(i)[0]
            if role == "spatial" and self.channel_keyed(j) and self.key_class(i) is self.key_class(j):
                continue
            if role in ("fresh", "spatial") and not (isinstance(layer, Conv) and self.channel_keyed(j)
                                                     and self.channel_keyed(i)):
                out.append(i)
        return out

    def generated(self) -> list[int]:
        """Representatives of the classes whose keys are drawn (fresh and depthwise), in network order."""
        reps = {self.find(t) for t in self.parent if self.key_class(t).generated}
        return sorted(reps, key=lambda r: min(self.classes[r].members))

    def anchor(self, rep: int) -> int:
        """The tensor whose shape a generated class's key is drawn for (its first member)."""
        return min(self.classes[rep].members)
