"""The one rule for identifiers that name devices and models in configs, vaults, bundles and records.

An id is 1..64 characters: a letter or digit, then letters, digits, '.', '_' or '-'. It is used as a
file name (vault entries, bundle names, Mender artifact names) and in MQTT topics, so '/', ':' and
spaces are refused everywhere, not only where a file happens to be written.
"""
from __future__ import annotations

import re

from base.errors import ConfigError

ID_RULE = "1..64 of letters, digits, '.', '_', '-', starting with a letter or digit"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def is_valid_id(value: object) -> bool:
    """True when `value` is a string that follows the id rule."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, what: str, error: type[Exception] = ConfigError) -> str:
    """Return `value` if it follows the id rule, else raise `error` naming `what` and the rule."""
    if not is_valid_id(value):
        raise error(f"invalid {what} {value!r}: use {ID_RULE}")
    return value
