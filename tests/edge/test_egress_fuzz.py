"""Property test: no frame data, plain or keyed, in any encoding or position, passes the egress guard."""
from __future__ import annotations

import base64
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.egress import EgressRefused
from hardware.camera.samples import load_samples
from keys.drbg import Drbg
from keys.generate import KeyConfig, sensor_key
from tests.kits.edge import LABELS, guard, top_k_record

SAMPLES, _ = load_samples(limit=64)
SENSOR_KEY = sensor_key(Drbg(bytes(range(32)), "fuzz"), (1, 28, 28), KeyConfig(tile=4))
GUARDS = (guard(), guard(output_encrypted=True))


def _keyed(plain: np.ndarray) -> np.ndarray:
    """The simulated sensor's keyed ADC frame for a plain uint8 frame."""
    x = SENSOR_KEY.apply(plain.reshape(-1).astype(np.float64) / 255.0)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8).reshape(plain.shape)


@st.composite
def frames(draw) -> np.ndarray:
    """Plain shipped frames, keyed frames, crops of either (>= 16 values), random and float frames."""
    source = draw(st.sampled_from(["sample", "keyed", "crop", "random", "float"]))
    frame = SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))]
    if source == "keyed":
        return _keyed(frame)
    if source == "crop":
        h, w = draw(st.integers(4, 28)), draw(st.integers(4, 28))
        full = _keyed(frame) if draw(st.booleans()) else frame
        return full[:h, :w]
    if source == "random":
        h, w = draw(st.integers(4, 32)), draw(st.integers(4, 32))
        seed = draw(st.integers(0, 2 ** 32 - 1))
        return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)
    if source == "float":
        return frame.astype(np.float32) / 255.0
    return frame


def _encodings(frame: np.ndarray) -> list:
    """Ways a buggy or malicious stage might try to smuggle a frame out."""
    flat = frame.reshape(-1)
    as_bytes = np.ascontiguousarray(frame).tobytes()
    floats = [float(v) for v in flat.astype(np.float64) / (255.0 if frame.dtype == np.uint8 else 1.0)]
    return [frame, flat, frame.tolist(), flat.tolist(), floats, sorted(floats, reverse=True), as_bytes,
            base64.b64encode(as_bytes).decode(), as_bytes.hex(), as_bytes.decode("latin-1"),
            [{"label": "class1", "score": v} for v in sorted(floats, reverse=True)],
            {"pixels": flat.tolist()}, memoryview(as_bytes)]


FIELDS = ["type", "timestamp", "seq", "model_id", "key_fingerprint", "top_k", "encrypted_logits",
          "pixels", "image", "frame", "debug"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=frames(), field=st.sampled_from(FIELDS), how=st.sampled_from(["replace", "nest", "whole"]),
       which=st.integers(0, 12), encrypted=st.booleans())
def test_no_frame_data_passes_the_guard(frame, field, how, which, encrypted):
    payload = _encodings(frame)[which]
    g = GUARDS[int(encrypted)]
    if how == "whole":
        candidate = payload
    else:
        candidate = top_k_record(1)
        if encrypted:
            del candidate["top_k"]
            candidate["encrypted_logits"] = [0.0] * 10
        if how == "replace":
            candidate[field] = payload
        else:   # hide it one level down, inside the prediction's own payload
            inner = "encrypted_logits" if encrypted else "top_k"
            candidate[inner] = [payload] + candidate[inner][1:]
    refused_before = g.refused
    try:
        out = g.check(candidate)
    except EgressRefused:
        assert g.refused == refused_before + 1
        return
    raise AssertionError(f"guard let frame data out: {out.payload[:200]!r}")


@settings(max_examples=200, deadline=None)
@given(scores=st.lists(st.one_of(st.floats(0, 1), st.floats()), min_size=0, max_size=40),
       labels=st.lists(st.one_of(st.sampled_from(LABELS), st.text(max_size=8)), min_size=0, max_size=40))
def test_accepted_predictions_carry_at_most_top_k_known_labels(scores, labels):
    """Whatever arrives, an accepted record has <= top_k (label, score) pairs from the model's labels."""
    g = GUARDS[0]
    record = {"type": "prediction", "timestamp": time.time(), "seq": 0, "model_id": "demo-model",
              "key_fingerprint": "a" * 64,
              "top_k": [{"label": lab, "score": s} for lab, s in zip(labels, scores)]}
    try:
        g.check(record)
    except EgressRefused:
        return
    assert 1 <= len(record["top_k"]) <= g.policy.top_k
    assert all(e["label"] in g.policy.labels for e in record["top_k"])
