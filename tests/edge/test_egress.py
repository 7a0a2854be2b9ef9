"""Egress guard: the record schema, caps, and what it refuses."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge.egress import (
    HARD_MAX_RECORD_BYTES,
    EgressGuard,
    EgressRefused,
    GuardedRecord,
    OutputPolicy,
    decode_encrypted_logits,
    prediction_record,
)
from tests.kits.edge import FP_KEY, FP_SENSOR, LABELS, guard, policy, top_k_record


def _stats(**overrides) -> dict:
    record = {"type": "stats", "timestamp": time.time(), "seq": 1, "model_id": "demo-model",
              "key_fingerprint": FP_KEY, "sensor_fingerprint": FP_SENSOR, "frames": 10, "dropped": 0,
              "fps": 200.0, "alarms": 0, "refused": 0, "sink_lost": 0,
              "latency_ms": {s: {"p50": 0.1, "p99": 0.2} for s in ("capture", "key", "infer", "egress")}}
    record.update(overrides)
    return record


def _alarm(**overrides) -> dict:
    record = {"type": "alarm", "timestamp": time.time(), "seq": 0, "model_id": "demo-model",
              "reason": "sensor_key_mismatch", "attempt": 2, "retry_in_s": 4.0}
    record.update(overrides)
    return record


def test_valid_records_pass_as_one_json_line():
    g = guard()
    for record in (top_k_record(7), _stats(), _alarm()):
        out = g.check(record)
        assert isinstance(out, GuardedRecord) and out.payload.endswith(b"\n")
        assert json.loads(out.payload) == record
    assert g.refused == 0


def test_prediction_record_builds_sorted_top_k_from_logits():
    logits = np.array([0.1, 3.0, -1.0, 2.0, 0, 0, 0, 0, 0, 0], dtype=np.float32)
    record = prediction_record(policy(), 5, time.time(), logits)
    assert [e["label"] for e in record["top_k"]] == ["class1", "class3", "class0"]
    softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [e["score"] for e in record["top_k"]] == pytest.approx(softmax[[1, 3, 0]], abs=1e-6)
    guard().check(record)


def test_encrypted_logits_pass_only_for_an_encrypting_model_and_decode_for_the_key_holder():
    from keys.drbg import Drbg
    from keys.generate import KeyConfig, output_key
    key = output_key(Drbg(bytes(32), "out"), 10, KeyConfig())
    logits = np.arange(10, dtype=np.float64)
    record = prediction_record(policy(output_encrypted=True), 1, time.time(), key.apply(logits))
    guard(output_encrypted=True).check(record)
    with pytest.raises(EgressRefused, match="does not encrypt"):
        guard().check(record)
    with pytest.raises(EgressRefused, match="encrypts its outputs"):
        guard(output_encrypted=True).check(top_k_record(1))
    decoded = decode_encrypted_logits(record["encrypted_logits"], key, LABELS, top_k=2)
    assert [label for label, _ in decoded] == ["class9", "class8"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.update(extra=1), "schema"),
    (lambda r: r.pop("seq"), "schema"),
    (lambda r: r.update(type="frame"), "record type"),
    (lambda r: r.update(seq=1.0), "seq"),
    (lambda r: r.update(seq=True), "seq"),
    (lambda r: r.update(seq=-1), "seq"),
    (lambda r: r.update(timestamp=float("nan")), "timestamp"),
    (lambda r: r.update(timestamp=1.0), "timestamp"),
    (lambda r: r.update(model_id="other"), "model_id"),
    (lambda r: r.update(key_fingerprint="c" * 64), "key_fingerprint"),
    (lambda r: r["top_k"].append({"label": "class4", "score": 0.01}) or
     r["top_k"].append({"label": "class5", "score": 0.001}), "top_k"),
    (lambda r: r.update(top_k=[{"label": "bogus", "score": 0.5}]), "labels"),
    (lambda r: r.update(top_k=[{"label": "class1", "score": 0.5}, {"label": "class1", "score": 0.4}]), "labels"),
    (lambda r: r.update(top_k=[{"label": "class1", "score": 0.1}, {"label": "class2", "score": 0.4}]), "score"),
    (lambda r: r.update(top_k=[{"label": "class1", "score": np.float32(0.5)}]), "score"),
    (lambda r: r.update(top_k=[{"label": "class1", "score": 0.5, "pixels": [1]}]), "label, score"),
    (lambda r: r.update(top_k=[]), "top_k"),
])
def test_guard_refuses_malformed_predictions(mutate, message):
    g, record = guard(), top_k_record(3)
    mutate(record)
    with pytest.raises(EgressRefused, match=message):
        g.check(record)
    assert g.refused == 1


def test_guard_refuses_bad_alarms_and_stats():
    g = guard()
    for bad in (_alarm(reason="free text with data"), _alarm(attempt=-1), _alarm(retry_in_s=1e9),
                _stats(frames=1.5), _stats(sensor_fingerprint="0" * 64), _stats(latency_ms={"capture": 1}),
                _stats(latency_ms={s: {"p50": 0.1, "p99": [0.2]} for s in ("capture", "key", "infer", "egress")})):
        with pytest.raises(EgressRefused):
            g.check(bad)
    assert g.refused == 7


def test_size_cap_is_enforced():
    g = EgressGuard(OutputPolicy("demo-model", FP_KEY, FP_SENSOR, (), 10, True, top_k=1, max_record_bytes=100))
    with pytest.raises(EgressRefused, match="bytes"):
        g.check(prediction_record(g.policy, 1, time.time(), np.linspace(-1e8, 1e8, 10)))


def test_policy_rejects_caps_beyond_the_hard_limits():
    with pytest.raises(EgressRefused, match="max_record_bytes"):
        policy(max_record_bytes=HARD_MAX_RECORD_BYTES + 1)
    with pytest.raises(EgressRefused, match="top_k"):
        policy(top_k=11)
    with pytest.raises(EgressRefused, match="outputs"):
        OutputPolicy("m", FP_KEY, FP_SENSOR, (), 100_000, True)
    with pytest.raises(EgressRefused, match="model id"):
        OutputPolicy("bad id with spaces", FP_KEY, FP_SENSOR, LABELS, 10, False)


def test_guarded_records_cannot_be_forged():
    with pytest.raises(EgressRefused):
        GuardedRecord(object(), "prediction", 1, b"{}")


def test_scores_of_a_quantised_softmax_output_are_renormalised_not_softmaxed_again():
    probs = np.array([0, 0, 0.02, 0, 0.168, 0, 0.816, 0, 0, 0], dtype=np.float32)   # sums to 1.004
    for known in (True, None):
        record = prediction_record(policy(outputs_are_probabilities=known), 1, time.time(), probs)
        assert [e["label"] for e in record["top_k"]] == ["class6", "class4", "class2"]
        assert record["top_k"][0]["score"] == pytest.approx(0.816 / 1.004, abs=1e-4)
    logits = prediction_record(policy(outputs_are_probabilities=False), 1, time.time(), probs)
    assert logits["top_k"][0]["score"] < 0.3          # treated as logits: softmax flattens them
