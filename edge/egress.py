"""Egress guard: the only door out of the device. Only schema-checked records pass, never pixels.

Three record types may leave, each a flat JSON object with a fixed key set:
  prediction  {type, timestamp, seq, model_id, key_fingerprint, top_k: [{label, score}, ...]}
              or, with output encryption, {..., encrypted_logits: [float, ...]} instead of top_k
  alarm       {type, timestamp, seq, model_id, reason, attempt, retry_in_s}
  stats       {type, timestamp, seq, model_id, key_fingerprint, sensor_fingerprint, frames, dropped,
               fps, alarms, refused, sink_lost, latency_ms: {stage: {p50, p99}}}
Labels must come from the model's own label set, the encrypted logits vector must have exactly the
model's output count, every number is a finite Python int/float in a bounded range, and the encoded
record has a hard byte cap. So per record at most `len(labels)` scores or `n_outputs` floats can
leave, which cannot carry a frame (see tests/edge/test_egress_fuzz.py). Sinks accept only
`GuardedRecord`s, which only `EgressGuard.check` creates.
"""
from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from base.errors import KeycamError
from base.ids import check_id

HARD_MAX_RECORD_BYTES = 8192   # no configuration can raise these
HARD_MAX_TOP_K = 10
HARD_MAX_LOGITS = 1024
MAX_ABS_LOGIT = 1e9
_TS_RANGE = (946_684_800.0, 4_102_444_800.0)   # 2000-01-01 .. 2100-01-01 UTC
_MAX_COUNT = 2 ** 53
_FP_RE = re.compile(r"[0-9a-f]{64}")
STAGES = ("capture", "key", "infer", "egress")
ALARM_REASONS = frozenset({
    "key_stage_missing", "key_stage_error", "sensor_key_missing", "sensor_key_mismatch",
    "faceplate_unreachable", "faceplate_not_engaged", "faceplate_wrong_id",
    "key_stage_recovered", "camera_error", "model_swap_rejected", "model_swapped",
})
_PREDICTION_COMMON = ("type", "timestamp", "seq", "model_id", "key_fingerprint")
_SCHEMAS: dict[str, frozenset[str]] = {
    "prediction_top_k": frozenset(_PREDICTION_COMMON + ("top_k",)),
    "prediction_encrypted": frozenset(_PREDICTION_COMMON + ("encrypted_logits",)),
    "alarm": frozenset(("type", "timestamp", "seq", "model_id", "reason", "attempt", "retry_in_s")),
    "stats": frozenset(("type", "timestamp", "seq", "model_id", "key_fingerprint", "sensor_fingerprint",
                        "frames", "dropped", "fps", "alarms", "refused", "sink_lost", "latency_ms")),
}


class EgressRefused(KeycamError):
    """The egress guard refused a record: it does not match the record schema or its caps."""


@dataclass(frozen=True)
class OutputPolicy:
    """What the current model may emit: identity, label vocabulary, output size and caps."""

    model_id: str
    key_fingerprint: str
    sensor_fingerprint: str
    labels: tuple[str, ...]
    n_outputs: int
    output_encrypted: bool
    top_k: int = 3
    max_record_bytes: int = 2048
    outputs_are_probabilities: bool | None = None   # None: unknown, decided per output vector

    def __post_init__(self):
        check_id(self.model_id, "model id", EgressRefused)
        for name in ("key_fingerprint", "sensor_fingerprint"):
            if not _FP_RE.fullmatch(getattr(self, name)):
                raise EgressRefused(f"{name} must be 64 lowercase hex characters (sha256)")
        if not 1 <= self.n_outputs <= HARD_MAX_LOGITS:
            raise EgressRefused(f"model has {self.n_outputs} outputs; the egress cap is {HARD_MAX_LOGITS}")
        if not self.output_encrypted:
            if len(self.labels) != self.n_outputs or len(set(self.labels)) != len(self.labels):
                raise EgressRefused(f"model needs {self.n_outputs} distinct labels, has {len(self.labels)}")
            if any(not isinstance(lab, str) or not 0 < len(lab) <= 64 for lab in self.labels):
                raise EgressRefused("labels must be non-empty strings of at most 64 characters")
        if not 1 <= self.top_k <= min(HARD_MAX_TOP_K, max(len(self.labels), 1)):
            raise EgressRefused(f"top_k must be 1..{min(HARD_MAX_TOP_K, max(len(self.labels), 1))}")
        if not 64 <= self.max_record_bytes <= HARD_MAX_RECORD_BYTES:
            raise EgressRefused(f"max_record_bytes must be 64..{HARD_MAX_RECORD_BYTES}")


class GuardedRecord:
    """A record that passed the guard: its kind, sequence number and encoded JSON line (bytes)."""

    __slots__ = ("kind", "payload", "seq")
    _token = object()

    def __init__(self, token: object, kind: str, seq: int, payload: bytes):
        if token is not GuardedRecord._token:
            raise EgressRefused("a GuardedRecord can only be made by EgressGuard.check")
        self.kind, self.seq, self.payload = kind, seq, payload

    def __repr__(self) -> str:
        return f"GuardedRecord({self.kind}, seq={self.seq}, {len(self.payload)} bytes)"


def _refuse(msg: str) -> NoReturn:
    raise EgressRefused(msg)


def _int(value: object, name: str, lo: int = 0, hi: int = _MAX_COUNT) -> None:
    if type(value) is not int or not lo <= value <= hi:
        _refuse(f"{name} must be an int in [{lo}, {hi}]")


def _float(value: object, name: str, lo: float, hi: float) -> None:
    if type(value) is not float or not math.isfinite(value) or not lo <= value <= hi:
        _refuse(f"{name} must be a finite float in [{lo}, {hi}]")


def _record_kind(record: dict) -> str:
    kind = record.get("type")
    if kind == "prediction":
        return "prediction_encrypted" if "encrypted_logits" in record else "prediction_top_k"
    if kind in ("alarm", "stats"):
        return kind
    _refuse(f"record type {kind!r} is not one of prediction, alarm, stats")


class EgressGuard:
    """Checks records against the schema and caps of one `OutputPolicy`; counts refusals."""

    def __init__(self, policy: OutputPolicy):
        self.policy = policy
        self._label_set = frozenset(policy.labels)
        self._lock = threading.Lock()
        self.refused = 0

    def check(self, record: object) -> GuardedRecord:
        """Return the record as a `GuardedRecord` or raise `EgressRefused` (and count it)."""
        try:
            self._validate(record)
            payload = json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"
            if len(payload) > self.policy.max_record_bytes:
                _refuse(f"record is {len(payload)} bytes, the cap is {self.policy.max_record_bytes}")
        except EgressRefused:
            with self._lock:
                self.refused += 1
            raise
        except (TypeError, ValueError, RecursionError) as exc:
            with self._lock:
                self.refused += 1
            raise EgressRefused(f"record is not plain JSON: {exc}") from exc
        return GuardedRecord(GuardedRecord._token, record["type"], record["seq"], payload)

    def _validate(self, record: object) -> None:
        if type(record) is not dict:
            _refuse(f"a record must be a dict, got {type(record).__name__}")
        kind = _record_kind(record)
        keys = set(record)
        if keys != _SCHEMAS[kind]:
            extra, missing = sorted(map(str, keys - _SCHEMAS[kind])), sorted(_SCHEMAS[kind] - keys)
            _refuse(f"{kind} record keys differ from the schema: extra {extra}, missing {missing}")
        p = self.policy
        _float(record["timestamp"], "timestamp", *_TS_RANGE)
        _int(record["seq"], "seq")
        if record["model_id"] != p.model_id:
            _refuse("model_id does not match the running model")
        if kind != "alarm" and record["key_fingerprint"] != p.key_fingerprint:
            _refuse("key_fingerprint does not match the running model")
        getattr(self, f"_check_{kind}")(record)

    def _check_prediction_top_k(self, record: dict) -> None:
        p, top = self.policy, record["top_k"]
        if p.output_encrypted:
            _refuse("this model encrypts its outputs: only encrypted_logits may leave")
        if type(top) is not list or not 1 <= len(top) <= p.top_k:
            _refuse(f"top_k must be a list of 1..{p.top_k} entries")
        previous, seen = 1.0, set()
        for entry in top:
            if type(entry) is not dict or set(entry) != {"label", "score"}:
                _refuse("each top_k entry must be {label, score}")
            label, score = entry["label"], entry["score"]
            if type(label) is not str or label not in self._label_set or label in seen:
                _refuse("top_k labels must be distinct labels of the running model")
            seen.add(label)
            _float(score, "score", 0.0, previous)
            previous = score

    def _check_prediction_encrypted(self, record: dict) -> None:
        p, logits = self.policy, record["encrypted_logits"]
        if not p.output_encrypted:
            _refuse("this model does not encrypt its outputs: only top_k may leave")
        if type(logits) is not list or len(logits) != p.n_outputs:
            _refuse(f"encrypted_logits must be a list of exactly {p.n_outputs} floats")
        for value in logits:
            _float(value, "encrypted logit", -MAX_ABS_LOGIT, MAX_ABS_LOGIT)

    def _check_alarm(self, record: dict) -> None:
        if record["reason"] not in ALARM_REASONS:
            _refuse(f"alarm reason must be one of {sorted(ALARM_REASONS)}")
        _int(record["attempt"], "attempt")
        _float(record["retry_in_s"], "retry_in_s", 0.0, 86_400.0)

    def _check_stats(self, record: dict) -> None:
        if record["sensor_fingerprint"] != self.policy.sensor_fingerprint:
            _refuse("sensor_fingerprint does not match the running model")
        for name in ("frames", "dropped", "alarms", "refused", "sink_lost"):
            _int(record[name], name)
        _float(record["fps"], "fps", 0.0, 1e7)
        lat = record["latency_ms"]
        if type(lat) is not dict or set(lat) != set(STAGES):
            _refuse(f"latency_ms must have exactly the stages {STAGES}")
        for stage, q in lat.items():
            if type(q) is not dict or set(q) != {"p50", "p99"}:
                _refuse("each latency_ms stage must be {p50, p99}")
            for name, value in q.items():
                _float(value, f"latency_ms.{stage}.{name}", 0.0, 3.6e6)


def prediction_record(policy: OutputPolicy, seq: int, timestamp: float, outputs: np.ndarray) -> dict:
    """Build a prediction record from a model's float output vector (not yet guard-checked)."""
    values = np.asarray(outputs, dtype=np.float64).reshape(-1)
    base = {"type": "prediction", "timestamp": float(timestamp), "seq": int(seq),
            "model_id": policy.model_id, "key_fingerprint": policy.key_fingerprint}
    if policy.output_encrypted:
        return {**base, "encrypted_logits": [float(v) for v in values]}
    scores = _as_probabilities(values, policy.outputs_are_probabilities)
    order = np.argsort(-scores, kind="stable")[:policy.top_k]
    return {**base, "top_k": [{"label": policy.labels[i], "score": round(float(scores[i]), 6)}
                              for i in order]}


def _as_probabilities(values: np.ndarray, probabilities: bool | None = None) -> np.ndarray:
    """Scores in [0, 1] summing to 1: softmax of logits, or the model's own (quantised) softmax output
    renormalised. `probabilities=None` guesses from the vector (non-negative, sum within 2% of 1)."""
    if probabilities is None:
        probabilities = bool(values.min() >= 0.0 and abs(values.sum() - 1.0) < 0.02)
    if probabilities:
        clipped = np.clip(values, 0.0, None)
        total = clipped.sum()
        return clipped / total if total > 0 else np.full_like(values, 1.0 / values.size)
    e = np.exp(values - values.max())
    return e / e.sum()


def decode_encrypted_logits(encrypted: list[float] | np.ndarray, output_key, labels: tuple[str, ...],
                            top_k: int = 3) -> list[tuple[str, float]]:
    """For the key holder: undo the output key (keys.factors.Key) and return top-k (label, score)."""
    enc = np.asarray(encrypted, dtype=np.float64).reshape(-1)
    if enc.size != output_key.size:
        raise EgressRefused(f"{enc.size} encrypted logits, but the output key has size {output_key.size}")
    logits = np.asarray(output_key.apply_inverse(enc), dtype=np.float64).reshape(-1)
    if len(labels) != logits.size:
        raise EgressRefused(f"{logits.size} logits but {len(labels)} labels")
    scores = _as_probabilities(logits)
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [(labels[i], float(scores[i])) for i in order]
