"""Derive the key set for a network and key it: W'_i = A_i W_i A_{i-1}^-1 (numpy/scipy, sparse)."""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from base.errors import KeycamError
from keys.drbg import Drbg
from keys.factors import Bias, ChannelGenPerm, Gain, Key, Permutation
from keys.generate import channel_layer_key, output_key, sensor_key, spatial_layer_key
from keys.keyset import KeySet
from keys.profiles import Profile, get_profile
from tools.ir import (
    LINEAR,
    AvgPool,
    Conv,
    Dense,
    Flatten,
    Network,
    Softmax,
    Unflatten,
    conv_matrix,
    forward,
    pool_matrix,
)
from tools.keying.patchkey import gather_stem, patch_sensor_key, patch_size

FLOAT_TOLERANCE = 1e-4
ROW_CHUNK_NNZ = 8_000_000      # bound on the temporaries of one row-gather chunk


class KeyingError(KeycamError):
    """The network cannot be keyed as asked, or the keyed network does not match the original."""


def model_id_of(onnx_bytes: bytes) -> str:
    """A model's id: the first 16 hex digits of the SHA-256 of its ONNX file."""
    return hashlib.sha256(onnx_bytes).hexdigest()[:16]


def _linear_indices(net: Network) -> list[int]:
    return [i for i, layer in enumerate(net.layers) if isinstance(layer, LINEAR)]


def derive_keyset(secret: bytes, device_id: str, model_id: str, net: Network, profile: str | Profile,
                  output_encryption: bool = False) -> KeySet:
    """All keys for one device and one model, derived deterministically from a 256-bit secret."""
    prof = get_profile(profile)
    root = Drbg(secret, f"keyset/{device_id}/{model_id}/{prof.name}")
    shapes = net.shapes()
    in_shape = tuple(net.input_shape) if len(net.input_shape) == 3 else (1, 1, int(net.input_shape[0]))
    if prof.sensor_layout == "patch":
        try:
            k = patch_size(net)
        except ValueError as exc:
            raise KeyingError(f"profile {prof.name}: {exc}") from exc
        sensor = patch_sensor_key(root.child("sensor"), in_shape, k, prof.sensor)
    else:
        sensor = sensor_key(root.child("sensor"), in_shape, prof.sensor)
    linear = _linear_indices(net)
    if not linear:
        raise KeyingError("the network has no linear layer to key")
    layers: list[Key] = []
    previous: Key = sensor
    for n, i in enumerate(linear[:-1]):
        layer, shape = net.layers[i], shapes[i]
        rng = root.child(f"layer{n}")
        size = int(np.prod(shape))
        name = f"layer{n}:{type(layer).__name__.lower()}"
        spatial_out = len(shape) == 3
        if isinstance(layer, AvgPool) and isinstance(_single(previous), ChannelGenPerm):
            chan = _single(previous)
            key = Key(size, [ChannelGenPerm(chan.perm, chan.gain, shape[1] * shape[2])], name)
        elif spatial_out and not prof.spatial_layers:
            key = channel_layer_key(rng, shape[0], shape[1] * shape[2], prof.layers, name)
        else:
            key = spatial_layer_key(rng, size, prof.layers, name)
        layers.append(key)
        previous = key
    out = output_key(root.child("output"), net.output_size, prof.layers) if output_encryption else None
    meta = {"input_shape": list(net.input_shape), "output_encryption": output_encryption}
    return KeySet(device_id, model_id, prof.name, sensor, layers, out, meta)


def _single(key: Key):
    return key.factors[0] if len(key.factors) == 1 else None


def _same_channel_key(a, b) -> bool:
    """Both per-channel keys with the same permutation and gains (an average pool commutes with them)."""
    return isinstance(a, ChannelGenPerm) and isinstance(b, ChannelGenPerm) and np.array_equal(a.perm, b.perm) \
        and np.array_equal(a.gain, b.gain)


def _as_matrix(layer, in_shape) -> tuple[sp.csr_matrix | np.ndarray, np.ndarray]:
    if isinstance(layer, Conv):
        m = conv_matrix(layer, in_shape)
        return m, np.repeat(layer.bias, m.shape[0] // len(layer.bias))
    if isinstance(layer, AvgPool):
        m = pool_matrix(layer, in_shape)
        return m, np.zeros(m.shape[0])
    return layer.weight, layer.bias


@dataclass(frozen=True)
class GenPerm:
    """A key in generalized-permutation form: y[i] = scale[i] * x[index[i]] + offset[i]."""
    index: np.ndarray
    scale: np.ndarray
    offset: np.ndarray

    @property
    def inverse_index(self) -> np.ndarray:
        """inv[j] = the output position that reads input j."""
        inv = np.empty_like(self.index)
        inv[self.index] = np.arange(len(self.index))
        return inv

    def inverse_linear(self, y: np.ndarray) -> np.ndarray:
        """L^-1 y (the offset not removed)."""
        x = np.empty_like(y, dtype=np.float64)
        x[self.index] = y / self.scale
        return x


def genperm_form(key: Key) -> GenPerm | None:
    """The key as one gather + scale + offset, or None when a factor mixes units (tile or dense mix)."""
    n = key.size
    index, scale, offset = np.arange(n), np.ones(n), np.zeros(n)
    for f in key.factors:
        if isinstance(f, Permutation):
            index, scale, offset = index[f.perm], scale[f.perm], offset[f.perm]
        elif isinstance(f, ChannelGenPerm):
            gather, g = f._index(f.perm), np.repeat(f.gain, f.spatial)
            index, scale, offset = index[gather], scale[gather] * g, offset[gather] * g
        elif isinstance(f, Gain):
            scale, offset = scale * f.g, offset * f.g
        elif isinstance(f, Bias):
            offset = offset + f.b
        else:
            return None
    return GenPerm(index, scale, offset)


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
        data[lo:hi] = w.data[src] * np.repeat(row_scale[a:b], lengths[a:b])
    return sp.csr_matrix((data, indices, indptr), shape=(len(rows), w.shape[1]))


def _key_columns(w, g_in: GenPerm):
    """W L_in^-1 for a generalized-permutation input key: column j moves to inv[j], divided by its scale."""
    inv = g_in.inverse_index
    if not sp.issparse(w):
        return np.asarray(w)[:, g_in.index] / g_in.scale
    w = sp.csr_matrix(w)
    indices = inv[w.indices]
    out = sp.csr_matrix((w.data / g_in.scale[indices], indices.astype(w.indices.dtype), w.indptr.copy()),
                        shape=w.shape)
    out.has_sorted_indices = False
    out.sort_indices()
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
    return Conv(w, k_out.gain * layer.bias[k_out.perm], layer.stride, layer.pads, layer.act, layer.alpha)


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


def iter_keyed_layers(net: Network, keyset: KeySet, progress: Callable[[str], None] | None = None,
                      profile: Profile | None = None) -> Iterator:
    """Yield the keyed network's layers one at a time (callers may stream them and drop each one).

    `progress` (e.g. a stderr printer) gets one line per keyed linear layer with its size and time.
    `profile` defaults to the key set's registered profile.
    """
    prof = profile or get_profile(keyset.profile)
    shapes = [tuple(net.input_shape)] + net.shapes()
    linear = _linear_indices(net)
    keys_out = dict(zip(linear, keyset.layers + [keyset.output]))
    if len(keyset.layers) != len(linear) - 1:
        raise KeyingError(f"key set has {len(keyset.layers)} layer keys, the network needs {len(linear) - 1}")
    k_in: Key = keyset.sensor
    vector = True            # keyed activations start as flat vectors (the sensor key scrambles space)
    if prof.sensor_stage:
        start = time.perf_counter()
        stage, k_in = sensor_stage(keyset.sensor, tuple(net.input_shape))
        yield from stage
        vector = len(stage) == 1
        if progress is not None:
            progress(f"sensor stage: A0^-1 as a sparse layer, {stage[0].weight.nnz:,} non-zeros "
                     f"in {time.perf_counter() - start:.2f} s")
    for i, layer in enumerate(net.layers):
        in_shape, out_shape = shapes[i], shapes[i + 1]
        if isinstance(layer, LINEAR):
            start = time.perf_counter()
            k_out = keys_out[i]
            cin, cout = _single(k_in), _single(k_out) if k_out is not None else None
            if isinstance(layer, AvgPool) and not vector and _same_channel_key(cin, cout):
                keyed, what = layer, "average pool (per-channel key, unchanged)"
            elif isinstance(layer, Conv) and isinstance(cin, ChannelGenPerm) and isinstance(cout, ChannelGenPerm) \
                    and not vector:
                keyed, what = _key_conv_channels(layer, cin, cout), "conv (channel keys)"
            elif i == 0 and isinstance(cout, ChannelGenPerm) and (stem := _patch_stem(layer, k_in, in_shape)):
                gather, conv = stem
                yield gather
                plain_in = ChannelGenPerm(np.arange(conv.weight.shape[1]), np.ones(conv.weight.shape[1]), 1)
                keyed, what = _key_conv_channels(conv, plain_in, cout), "patch stem as gather + 1x1 conv"
                vector = False
            else:
                if not vector:
                    yield Flatten()
                w, b = _as_matrix(layer, in_shape)
                wk, bk = _key_generic(w, b, k_in, k_out)
                del w
                keyed = Dense(wk, bk, getattr(layer, "act", "none"), getattr(layer, "alpha", 0.0))
                what = f"dense {wk.shape[0]}x{wk.shape[1]}" + (f", {wk.nnz:,} non-zeros" if sp.issparse(wk) else "")
                vector = not (isinstance(cout, ChannelGenPerm) and len(out_shape) == 3)
            if progress is not None:
                progress(f"keyed layer {i + 1}/{len(net.layers)} ({type(layer).__name__.lower()}): {what} "
                         f"in {time.perf_counter() - start:.2f} s")
            yield keyed
            if isinstance(keyed, Dense) and not vector:
                yield Unflatten(out_shape)
            if k_out is not None:
                k_in = k_out
        elif isinstance(layer, (Flatten, Unflatten)):
            if not vector and isinstance(layer, Flatten):
                yield Flatten()
                vector = True
        elif isinstance(layer, Softmax):
            if keyset.output is None:
                yield layer
        else:
            yield layer


def key_network(net: Network, keyset: KeySet, progress: Callable[[str], None] | None = None,
                profile: Profile | None = None) -> Network:
    """Return the keyed network: on keyed frames it computes A_k f(x) (A_k = I without output key)."""
    layers = list(iter_keyed_layers(net, keyset, progress, profile))
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
    trimmed = Network(net.input_shape, [l for l in net.layers if not isinstance(l, Softmax)], net.name)
    return forward(trimmed, x)
