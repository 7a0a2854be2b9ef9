"""Decode output-encrypted prediction records (JSON lines from a device) with the vault's key sets."""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from base.errors import ConfigError
from edge.egress import decode_encrypted_logits
from keys.factors import Key
from keys.fields import VaultError
from keys.records import Generation
from keys.vault import Vault


class RecordDecoder:
    """Turns records back into labels: each record's key set is found by its key_fingerprint, else it
    is `device`'s active one; output keys are unpacked once per key set."""

    def __init__(self, vault: Vault, device: str | None = None, top_k: int = 3):
        self.vault, self.device, self.top_k = vault, device, top_k
        self._by_fp = {g.key_fingerprint: g for d in vault.devices.values() for g in d.generations}
        self._keys: dict[str, Key] = {}

    def _generation(self, rec: dict, n: int) -> Generation:
        fp = rec.get("key_fingerprint")
        if fp:
            if fp not in self._by_fp:
                raise VaultError(f"line {n}: no key set with fingerprint {fp[:16]} in the vault")
            return self._by_fp[fp]
        if self.device:
            return self.vault.device(self.device).generation()
        raise ConfigError(f"line {n}: the record has no key_fingerprint; pass --device")

    def _output_key(self, gen: Generation, n: int) -> Key:
        if gen.key_fingerprint not in self._keys:
            output = gen.key_set().output
            if output is None:
                raise VaultError(f"line {n}: key set {gen.key_fingerprint[:16]} has no output key "
                                 "(the model was provisioned without --output-encryption)")
            self._keys[gen.key_fingerprint] = output
        return self._keys[gen.key_fingerprint]

    def decode(self, rec: object, n: int) -> object:
        """One record: with encrypted_logits, the record with top_k labels instead; else it as it is."""
        if not isinstance(rec, dict) or "encrypted_logits" not in rec:   # alarms, stats, plain predictions
            return rec
        gen = self._generation(rec, n)
        key = self._output_key(gen, n)
        labels = tuple(gen.labels) or tuple(str(i) for i in range(key.size))
        top = decode_encrypted_logits(rec["encrypted_logits"], key, labels, self.top_k)
        out = {k: v for k, v in rec.items() if k != "encrypted_logits"}
        out["top_k"] = [{"label": label, "score": round(score, 6)} for label, score in top]
        return out

    def lines(self, lines: Iterable[str]) -> Iterator[object]:
        """Decode JSON lines (blank lines skipped); a line that is not JSON raises ConfigError naming it."""
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"line {n}: not a JSON record ({exc})") from exc
            yield self.decode(rec, n)
