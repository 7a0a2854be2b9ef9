"""Time stamps written into vaults, audit logs and the device agent's state."""
from __future__ import annotations

import time


def now_iso() -> str:
    """The current UTC time as an ISO 8601 string to the second, e.g. 2026-12-07T08:00:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
