"""Derive the key set for a network (a DAG, tools.ir) and key it: W' = A_out W A_in^-1 for every linear op, with
the key of every tensor from its key class (tools.keying.rules); numpy/scipy, sparse where the keys mix units."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from keys.drbg import Drbg
from keys.factors import Bias, ChannelGenPerm, Gain, Key, Permutation
from keys.generate import channel_layer_key, gains, output_key, sensor_key, spatial_layer_key
from keys.keyset import KeySet
from keys.profiles import Profile, get_profile
from tools.ir import (
    INPUT,
    LINEAR,
    Activation,
    Add,
    AvgPool,
    Concat,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    Network,
    Resize,
    Shift,
    Softmax,
    Unflatten,
    conv_matrix,
    expand_groups,
    forward,
    pool_matrix,
    resize_matrix,
)
from tools.keying.genperm import GenPerm, genperm_form
from tools.keying.patchkey import gather_stem, patch_sensor_key, patch_size
from tools.keying.rules import KeyingError, KeyPlan, rule_of

__all__ = ["GenPerm", "genperm_form", "KeyingError", "derive_keyset", "key_network", "iter_keyed_layers", "verify_keyed",
           "model_id_of"]

FLOAT_TOLERANCE = 1e-4
ROW_CHUNK_NNZ = 8_000_000      # bound on the temporaries of one row-gather chunk


def model_id_of(onnx_bytes: bytes) -> str:
    """A model's id: the first 16 hex digits of the SHA-256 of its ONNX file."""
    return hashlib.sha256(onnx_bytes).hexdigest()[:16]


class KeyAssignment:
    """The key of every tensor of a network, from its key plan and the keys drawn or fixed per class."""

    def __init__(self, plan: KeyPlan, sensor: Key, output: Key | None, drawn: dict[int, Key]):
        self.plan, self.sensor, self.output, self.drawn = plan, sensor, output, drawn

    def size(self, t: int) -> int:
        return int(np.prod(self.plan.shapes[t]))

    def tensor_key(self, t: int) -> Key:
        """Tensor t's key as a Key over its C*H*W units (an identity key when it is unkeyed)."""
        plan, n = self.plan, self.size(t)
        c = plan.key_class(t)
        kind = c.source[0]
        if kind == "input":
            return self._identity(t) if plan.profile.sensor_stage else self.sensor
        if kind == "output":
            return self.output if self.output is not None and t == plan.logits else self._identity(t)
        if kind == "concat":
            return self._concat(c.source[1], t)
        key = self.drawn[plan.find(t)]
        f = _single(key)
        if isinstance(f, ChannelGenPerm):
            return Key(n, [ChannelGenPerm(f.perm, f.gain, n // len(f.perm))], key.name)
        return key

    def _identity(self, t: int) -> Key:
        shape = self.plan.shapes[t]
        if self.plan.key_class(t).mode == "channel" and len(shape) == 3:
            return Key(self.size(t), [ChannelGenPerm(np.arange(shape[0]), np.ones(shape[0]), shape[1] * shape[2])],
                       "plain")
        return Key(self.size(t), [], "plain")

    def _concat(self, i: int, t: int) -> Key:
        """Block-diagonal key, for tensor t of its class, from the keys of Concat i's inputs."""
        n = self.size(t)
        parts = [self.tensor_key(j) for j in self.plan.net.inputs_of(i)]
        chans = [_single(k) for k in parts]
        if all(isinstance(f, ChannelGenPerm) for f in chans) and len({f.spatial for f in chans}) == 1:
            offsets = np.cumsum([0] + [len(f.perm) for f in chans[:-1]])
            perm = np.concatenate([f.perm + o for f, o in zip(chans, offsets)])
            return Key(n, [ChannelGenPerm(perm, np.concatenate([f.gain for f in chans]), n // len(perm))], "concat")
        forms = [genperm_form(k) for k in parts]
        if any(g is None for g in forms):
            raise KeyingError(f"concat {self.plan.net.layers[i].name!r}: an input key mixes units; no block-diagonal "
                              f"key under profile {self.plan.profile.name}")
        offsets = np.cumsum([0] + [len(g.index) for g in forms[:-1]])
        factors = [Permutation(np.concatenate([g.index + o for g, o in zip(forms, offsets)])),
                   Gain(np.concatenate([g.scale for g in forms]))]
        offset = np.concatenate([g.offset for g in forms])
        return Key(n, factors + ([Bias(offset)] if np.any(offset) else []), "concat")


def _linear_ordinal(net: Network) -> dict[int, int]:
    """Layer index -> its rank among the linear layers (the label of the key drawn for its output)."""
    return {i: n for n, i in enumerate(i for i, layer in enumerate(net.layers) if isinstance(layer, LINEAR))}


def grouped_permutation(rng: Drbg, groups: np.ndarray) -> np.ndarray:
    """A random permutation (keyed[i] = plain[index[i]]) keeping the units of each group contiguous: the groups in
    a random order, the units inside each group in a random order."""
    shuffled = rng.child("units").permutation(len(groups))
    rank = rng.child("groups").permutation(int(groups.max(initial=-1)) + 1)
    return shuffled[np.argsort(rank[groups[shuffled]], kind="stable")]


def _draw(rng: Drbg, assignment: KeyAssignment, rep: int, prof: Profile, name: str) -> Key:
    """The key of generated class `rep`: per channel or over all units, gains 1 where a reader needs a
    permutation; a depthwise conv's output keeps its input's channel permutation."""
    plan = assignment.plan
    c = plan.classes[rep]
    t = plan.anchor(rep)
    shape = plan.shapes[t]
    config = replace(prof.layers, gain_range=(1.0, 1.0)) if "permute" in c.needs else prof.layers
    if c.mode != "channel":
        layer = plan.net.layers[t] if t != INPUT else None
        if prof.grouped_units and isinstance(layer, Conv) and len(shape) == 3:
            units = np.tile(np.arange(shape[1] * shape[2]), shape[0])         # a unit's position: its group
            return Key(len(units), [Permutation(grouped_permutation(rng.child("perm"), units)),
                                    Gain(gains(rng.child("gain"), len(units), config.gain_range))], name)
        return spatial_layer_key(rng, int(np.prod(shape)), config, name)
    key = channel_layer_key(rng, shape[0], shape[1] * shape[2], config, name)
    if c.source[0] == "depthwise":
        layer = plan.net.layers[c.source[1]]
        f_in = _single(assignment.tensor_key(plan.net.inputs_of(c.source[1])[0]))
        m = layer.weight.shape[0] // len(f_in.perm)
        perm = (f_in.perm[:, None] * m + np.arange(m)[None, :]).reshape(-1)
        key = Key(key.size, [ChannelGenPerm(perm, _single(key).gain, shape[1] * shape[2])], name)
    return key


def derive_keyset(secret: bytes, device_id: str, model_id: str, net: Network, profile: str | Profile,
                  output_encryption: bool = False) -> KeySet:
    """All keys for one device and one model, derived deterministically from a 256-bit secret: the sensor
    key, one key per generated key class of the network's key plan (tools.keying.rules), the output key."""
    prof = get_profile(profile)
    plan = KeyPlan(net, prof, output_encryption)
    root = Drbg(secret, f"keyset/{device_id}/{model_id}/{prof.name}")
    in_shape = tuple(net.input_shape) if len(net.input_shape) == 3 else (1, 1, int(net.input_shape[0]))
    if prof.sensor_layout == "patch":
        try:
            k = patch_size(net)
        except ValueError as exc:
            raise KeyingError(f"profile {prof.name}: {exc}") from exc
        sensor = patch_sensor_key(root.child("sensor"), in_shape, k, prof.sensor)
    else:
        sensor = sensor_key(root.child("sensor"), in_shape, prof.sensor)
    if not _linear_ordinal(net):
        raise KeyingError("the network has no linear layer to key")
    out = output_key(root.child("output"), int(np.prod(plan.shapes[plan.logits])), prof.layers) \
        if output_encryption else None
    layers = draw_layer_keys(root, plan, sensor, out)
    meta = {"input_shape": list(net.input_shape), "output_encryption": output_encryption}
    return KeySet(device_id, model_id, prof.name, sensor, layers, out, meta)


def draw_layer_keys(root: Drbg, plan: KeyPlan, sensor: Key, out: Key | None) -> list[Key]:
    """The keys of the plan's generated classes, in network order (each from root.child('layer<n>'), n the
    rank of the class's first linear layer), after checking that the sensor key admits its readers."""
    if not plan.profile.sensor_stage:
        plan.check_fixed(INPUT, sensor)
    assignment = KeyAssignment(plan, sensor, out, {})
    ordinal = _linear_ordinal(plan.net)
    layers: list[Key] = []
    for rep in plan.generated():
        t = plan.anchor(rep)
        n = ordinal.get(t, t)
        name = f"layer{n}:{type(plan.net.layers[t]).__name__.lower()}"
        assignment.drawn[rep] = key = _draw(root.child(f"layer{n}"), assignment, rep, plan.profile, name)
        layers.append(key)
    return layers


def assignment_of(net: Network, keyset: KeySet, profile: Profile | None = None) -> KeyAssignment:
    """The key of every tensor of `net` for a key set derived for it."""
    prof = profile or get_profile(keyset.profile)
    plan = KeyPlan(net, prof, keyset.output is not None, bool(keyset.meta.get("output_from_input")))
    reps = plan.generated()
    if len(reps) != len(keyset.layers):
        raise KeyingError(f"key set has {len(keyset.layers)} layer keys, the network needs {len(reps)}")
    return KeyAssignment(plan, keyset.sensor, keyset.output, dict(zip(reps, keyset.layers)))


def _single(key: Key):
    return key.factors[0] if len(key.factors) == 1 else None


def _csr_gather_rows(w: sp.csr_matrix, rows: np.ndarray, row_scale: np.ndarray) -> sp.csr_matrix:
    """Rows w[rows[r]] * row_scale[r], built in bounded chunks of rows (no sparse product)."""
    lengths = np.diff(w.indptr)[rows]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=w.indices.dtype)
    data = np.empty(indptr[-1], dtype=w.data.dtype)
    step = max(1, int(ROW_CHUNK_NNZ // max(1.0, lengths.mean() if len(lengths) else 1.0)))
    for a in range(0, len(rows), step):
        b = min(a + step, len(rows))
        lo, hi = indptr[a], indptr[b]
        src = np.repeat(w.indptr[rows[a:b]] - indptr[a:b], lengths[a:b]) + np.arange(lo, hi)
        indices[lo:hi] = w.indices[src]
        data[lo:hi] = w.data[src] * np.repeat(row_scale[a:b].astype(w.data.dtype), lengths[a:b])
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), w.shape[1]))


def _key_columns(w, g_in: GenPerm):
    """W L_in^-1 for a generalized-permutation input key: column j moves to inv[j], divided by its scale."""
    inv = g_in.inverse_index
    if not sp.issparse(w):
        return np.asarray(w)[:, g_in.index] / g_in.scale
    w = sp.csr_matrix(w)
    indices = inv.astype(w.indices.dtype)[w.indices]          # in the matrix's index and value types: no upcast
    data = w.data * (1.0 / g_in.scale).astype(w.data.dtype)[indices]
    out = sp.csr_matrix((data, indices, w.indptr.copy()), shape=w.shape)
    out.has_sorted_indices = False                            # rows are sorted once, by the caller
    return out


def _key_generic(w, b, k_in: Key, k_out: Key | None):
    """W' = L_out W L_in^-1 and b' = L_out (b - W L_in^-1 c_in) + c_out, sparse where W is.

    Generalized-permutation keys (every layer key, and sensor keys without tile mixing) permute and
    scale the rows and columns directly; other keys fall back to sparse matrix products.
    """
    g_in = genperm_form(k_in)
    if g_in is not None:
        x0 = g_in.inverse_linear(g_in.offset)
        wk = _key_columns(w, g_in)
    else:
        lin_inv = k_in.inverse_linear_csr()
        x0 = lin_inv @ k_in.offset()
        wk = (sp.csr_matrix(w) @ lin_inv).tocsr() if sp.issparse(w) else np.asarray((lin_inv.T @ np.asarray(w).T).T)
    b2 = b - np.asarray(w @ x0).ravel()
    if k_out is not None:
        g_out = genperm_form(k_out)
        if g_out is not None:
            wk = _csr_gather_rows(wk, g_out.index, g_out.scale) if sp.issparse(wk) else \
                wk[g_out.index] * g_out.scale[:, None]
            b2 = b2[g_out.index] * g_out.scale + g_out.offset
        else:
            lout = k_out.linear_csr()
            wk = (lout @ wk).tocsr() if sp.issparse(wk) else np.asarray(lout @ wk)
            b2 = np.asarray(lout @ b2).ravel() + k_out.offset()
    if sp.issparse(wk):
        wk.eliminate_zeros()
        wk.sort_indices()
    return wk, b2


def _key_conv_channels(layer: Conv, k_in: ChannelGenPerm, k_out: ChannelGenPerm) -> Conv:
    """W'[o, c] = g_out[o] / g_in[c] * W[p_out[o], p_in[c]];  b'[o] = g_out[o] b[p_out[o]]."""
    w = layer.weight[k_out.perm][:, k_in.perm] * (k_out.gain[:, None] / k_in.gain[None, :])[:, :, None, None]
    return replace(layer, weight=w, bias=k_out.gain * layer.bias[k_out.perm])


def _patch_stem(layer, sensor: Key, in_shape) -> tuple | None:
    """GATHER + 1x1 conv for a patchify stem under a patch-aligned sensor key, else None."""
    if not isinstance(layer, Conv) or len(in_shape) != 3:
        return None
    kh, kw = layer.weight.shape[2:]
    if kh != kw or layer.stride != (kh, kw) or any(layer.pads) or in_shape[1] % kh or in_shape[2] % kw:
        return None
    g = genperm_form(sensor)
    return None if g is None else gather_stem(layer, in_shape, g.index, g.scale, g.offset)


def sensor_stage(sensor: Key, in_shape: tuple[int, ...]) -> tuple[list, Key]:
    """The layers that undo the sensor key, x = L^-1 (y - c), as one sparse Dense (a row per plain pixel, its
    non-zeros on the keyed pixels of that pixel's mixing group), and the identity key of their plain output.

    Used by profiles whose model is sealed key material: the stage holds A0^-1 in its weights."""
    inv = sensor.inverse_linear_csr()
    inv.eliminate_zeros()
    inv.sort_indices()
    n = sensor.size
    dense = Dense(inv, -np.asarray(inv @ sensor.offset()).ravel())
    if len(in_shape) == 3:
        c = in_shape[0]
        return [dense, Unflatten(tuple(in_shape))], Key(n, [ChannelGenPerm(np.arange(c), np.ones(c), n // c)], "plain")
    return [dense], Key(n, [], "plain")


class _KeyedBuilder:
    """Emits the keyed network layer by layer: tracks, for every tensor of the plain network, the keyed
    network's tensor holding it and whether that one is stored (C, H, W) (channel keys) or flat."""

    def __init__(self, net: Network, assignment: KeyAssignment):
        self.net, self.a = net, assignment
        self.count = 0
        self.where: dict[int, int] = {}
        self.spatial: dict[int, bool] = {}
        self.folded: set[int] = set()          # shifts added to the bias of the sparse layer before them

    def emit(self, layer, sources: list[int]):
        """Wire `layer` to the keyed tensors `sources`; returns (its keyed index, the layer)."""
        layer.inputs = tuple(sources)
        self.count += 1
        return self.count - 1, layer

    def as_vector(self, t: int) -> Iterator:
        if self.spatial[t]:
            index, layer = self.emit(Flatten(name=f"{self._name(t)}/flatten"), [self.where[t]])
            yield layer
            self.where[t], self.spatial[t] = index, False

    def as_spatial(self, t: int) -> Iterator:
        if not self.spatial[t]:
            index, layer = self.emit(Unflatten(self.a.plan.shapes[t], name=f"{self._name(t)}/unflatten"),
                                     [self.where[t]])
            yield layer
            self.where[t], self.spatial[t] = index, True

    def _name(self, t: int) -> str:
        return "input" if t == INPUT else self.net.layers[t].name or f"#{t}"

    def channel(self, t: int) -> ChannelGenPerm | None:
        """Tensor t's key as one per-channel factor, when it is one and t is (C, H, W)."""
        f = _single(self.a.tensor_key(t))
        return f if isinstance(f, ChannelGenPerm) and len(self.a.plan.shapes[t]) == 3 else None


def _key_depthwise(layer: Conv, k_in: ChannelGenPerm, k_out: ChannelGenPerm) -> Conv:
    """A depthwise conv under a per-channel input key and an output key with the input's permutation."""
    m = layer.weight.shape[0] // len(k_in.perm)
    g_in = np.repeat(k_in.gain, m)
    w = layer.weight[k_out.perm] * (k_out.gain / g_in)[:, None, None, None]
    return replace(layer, weight=w, bias=k_out.gain * layer.bias[k_out.perm])


def _as_matrix(layer, in_shape, dtype=np.float64) -> tuple[sp.csr_matrix | np.ndarray, np.ndarray]:
    if isinstance(layer, Conv):
        m = conv_matrix(layer, in_shape, dtype)
        return m, np.repeat(layer.bias, m.shape[0] // len(layer.bias))
    if isinstance(layer, AvgPool):
        m = pool_matrix(layer, in_shape, dtype)
        return m, np.zeros(m.shape[0])
    if isinstance(layer, Resize):
        m = resize_matrix(layer, in_shape, dtype)
        return m, np.zeros(m.shape[0])
    return layer.weight, layer.bias


def _keyed_slopes(alpha: np.ndarray, key: Key, shape: tuple[int, ...], spatial: bool) -> np.ndarray:
    """PReLU slopes moved with their units: per channel under a channel key stored (C, H, W), else per unit."""
    alpha = np.asarray(alpha, dtype=np.float64).reshape(-1)
    f = _single(key)
    if spatial and isinstance(f, ChannelGenPerm):
        return alpha[f.perm] if alpha.size == len(f.perm) else alpha
    per_unit = np.repeat(alpha, int(np.prod(shape)) // alpha.size) if alpha.size > 1 else \
        np.full(int(np.prod(shape)), float(alpha[0]))
    return per_unit[genperm_form(key).index]


def iter_keyed_layers(net: Network, keyset: KeySet, progress: Callable[[str], None] | None = None,
                      profile: Profile | None = None, dtype=np.float64) -> Iterator:
    """Yield the keyed network's layers one at a time (callers may stream them and drop each one); every
    yielded layer names its inputs among the keyed layers yielded before it (INPUT: the keyed frame).

    `progress` (e.g. a stderr printer) gets one line per keyed linear layer with its size and time.
    `profile` defaults to the key set's registered profile. `dtype`: of the sparse keyed matrices (float32
    halves the memory of large keyed nets; float64 keeps the float check exact to ~1e-15).
    """
    prof = profile or get_profile(keyset.profile)
    a = assignment_of(net, keyset, prof)
    b = _KeyedBuilder(net, a)
    b.where[INPUT], b.spatial[INPUT] = INPUT, False      # keyed frames are flat vectors
    if prof.sensor_stage:
        start = time.perf_counter()
        stage, _ = sensor_stage(keyset.sensor, tuple(net.input_shape))
        for layer in stage:
            index, layer = b.emit(layer, [b.where[INPUT]])
            b.where[INPUT] = index
            yield layer
        b.spatial[INPUT] = len(stage) == 2
        if progress is not None:
            progress(f"sensor stage: A0^-1 as a sparse layer, {stage[0].weight.nnz:,} non-zeros "
                     f"in {time.perf_counter() - start:.2f} s")
    shapes = a.plan.shapes
    last = len(net.layers) - 1
    only = {t: r[0] for t, r in net.consumers().items() if len(r) == 1}
    absorbed: dict[int, int] = {}          # linear layer -> the unit-keyed resize it absorbs (W N as one matrix)
    for i, layer in enumerate(net.layers):
        ins = net.inputs_of(i)
        start = time.perf_counter()
        what = ""
        out_channel = b.channel(i) if i != last or a.output is None else None
        if isinstance(layer, Softmax) and a.output is not None:
            b.where[i], b.spatial[i] = b.where[ins[0]], b.spatial[ins[0]]
            continue
        if isinstance(layer, Shift) and i in b.folded:         # already in the producing layer's bias
            b.where[i], b.spatial[i] = b.where[ins[0]], b.spatial[ins[0]]
            continue
        rule = rule_of(layer)
        spatial_pass = rule.role == "spatial" and b.channel(ins[0]) is not None and \
            a.plan.key_class(ins[0]).mode == "channel"
        if rule.role in ("fresh", "spatial") and not spatial_pass:
            if isinstance(layer, Resize) and isinstance(net.layers[only.get(i, i)], (Conv, Dense)) and i != last \
                    and a.plan.key_class(i).mode == "unit":
                absorbed[only[i]] = i
                continue
            j = ins[0]
            cin = b.channel(j)
            if isinstance(layer, Conv) and cin is not None and out_channel is not None:
                yield from b.as_spatial(j)
                if layer.depthwise and np.array_equal(out_channel.perm, (cin.perm[:, None] * (
                        layer.weight.shape[0] // len(cin.perm)) + np.arange(layer.weight.shape[0] // len(cin.perm))
                        ).reshape(-1)):
                    keyed, what = _key_depthwise(layer, cin, out_channel), "depthwise conv (channel keys)"
                else:
                    dense = expand_groups(layer) if layer.groups > 1 else layer
                    keyed, what = _key_conv_channels(dense, cin, out_channel), "conv (channel keys)"
                spatial = True
            elif j == INPUT and out_channel is not None and \
                    (stem := _patch_stem(layer, a.tensor_key(INPUT), shapes[INPUT])):
                gather, conv = stem
                index, gather = b.emit(gather, [b.where[INPUT]])
                yield gather
                plain_in = ChannelGenPerm(np.arange(conv.weight.shape[1]), np.ones(conv.weight.shape[1]), 1)
                keyed, what = _key_conv_channels(conv, plain_in, out_channel), "patch stem as gather + 1x1 conv"
                b.where[INPUT], b.spatial[INPUT] = index, True
                spatial = True
            else:
                w, bias = _as_matrix(layer, shapes[j], dtype)
                if i in absorbed:                                # W N: the resize folded into this layer
                    resize = absorbed[i]
                    j = net.inputs_of(resize)[0]
                    w = (sp.csr_matrix(w) @ resize_matrix(net.layers[resize], shapes[j], dtype)).tocsr()
                shift = net.layers[only.get(i, i)]
                if isinstance(shift, Shift) and getattr(layer, "act", "none") == "none":
                    bias = bias + shift.offset.reshape(-1)
                    b.folded.add(only[i])
                yield from b.as_vector(j)
                k_out = None if a.plan.key_class(i).source[0] == "output" and a.output is None else a.tensor_key(i)
                wk, bk = _key_generic(w, bias, a.tensor_key(j), k_out)
                del w
                keyed = Dense(wk, bk, getattr(layer, "act", "none"), getattr(layer, "alpha", 0.0), name=layer.name)
                what = f"dense {wk.shape[0]}x{wk.shape[1]}" + (f", {wk.nnz:,} non-zeros" if sp.issparse(wk) else "")
                spatial = False
            keyed.name = layer.name
            index, keyed = b.emit(keyed, [b.where[j]])
            yield keyed
            b.where[i], b.spatial[i] = index, spatial
            if not spatial and out_channel is not None and len(shapes[i]) == 3:
                yield from b.as_spatial(i)
            if progress is not None:
                progress(f"keyed layer {i + 1}/{len(net.layers)} ({type(layer).__name__.lower()}): {what} "
                         f"in {time.perf_counter() - start:.2f} s")
            continue
        if isinstance(layer, (MaxPool, AvgPool, Resize)):          # per-channel key: unchanged
            yield from b.as_spatial(ins[0])
            keyed = replace(layer)
        elif isinstance(layer, Flatten):
            yield from b.as_vector(ins[0])
            b.where[i], b.spatial[i] = b.where[ins[0]], False
            continue
        elif isinstance(layer, Concat) or isinstance(layer, Add):
            spatial = all(b.spatial[j] for j in ins) and all(b.channel(j) is not None for j in ins)
            for j in ins:
                yield from (b.as_spatial(j) if spatial else b.as_vector(j))
            keyed = replace(layer)
        elif isinstance(layer, Shift):                              # K(x + c) = K(x) + L c
            key = a.tensor_key(ins[0])
            moved = key.apply(layer.offset.reshape(-1)) - key.apply(np.zeros(layer.offset.size))
            keyed = replace(layer, offset=moved.reshape(shapes[i]) if b.spatial[ins[0]] else moved)
        elif isinstance(layer, Activation) and layer.act == "prelu":
            keyed = replace(layer, alpha=_keyed_slopes(layer.alpha, a.tensor_key(ins[0]), shapes[ins[0]],
                                                       b.spatial[ins[0]]))
        else:
            keyed = replace(layer)
        index, keyed = b.emit(keyed, [b.where[j] for j in ins])
        yield keyed
        b.where[i], b.spatial[i] = index, b.spatial[ins[0]]
    if b.where[last] != b.count - 1:
        raise KeyingError("internal: the keyed network's last layer is not its output")


def key_network(net: Network, keyset: KeySet, progress: Callable[[str], None] | None = None,
                profile: Profile | None = None, dtype=np.float64) -> Network:
    """Return the keyed network: on keyed frames it computes A_k f(x) (A_k = I without output key)."""
    layers = list(iter_keyed_layers(net, keyset, progress, profile, dtype))
    return Network((int(np.prod(net.input_shape)),), layers, name=f"{net.name}-keyed-{keyset.profile}")


def verify_keyed(net: Network, keyed: Network, keyset: KeySet, frames: np.ndarray) -> float:
    """Max relative error between the keyed net on keyed frames and A_k f(x); raises if > 1e-4."""
    x = np.asarray(frames, dtype=np.float64).reshape(len(frames), -1)
    want = forward(net, x)
    if keyset.output is not None:
        want = keyset.output.apply(logits_of(net, x))
    got = forward(keyed, keyset.sensor.apply(x))
    err = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-12))
    if err > FLOAT_TOLERANCE:
        raise KeyingError(f"keyed network differs from the original: max relative error {err:.2e} > {FLOAT_TOLERANCE}")
    return err


def logits_of(net: Network, x: np.ndarray) -> np.ndarray:
    """The network's output before a final softmax (what output encryption protects)."""
    if not isinstance(net.layers[-1], Softmax):
        return forward(net, x)
    end = net.inputs_of(len(net.layers) - 1)[0]
    return forward(Network(net.input_shape, net.layers[:end + 1], net.name), x)
