"""Read the JSON metadata keycam embeds in a .tflite file (model id, key fingerprint, labels, ...)."""
from __future__ import annotations

import json

from base.errors import ModelError


def extract_metadata(model_bytes: bytes, name: str) -> dict:
    """Return the JSON object stored under metadata entry `name`, or {} when absent."""
    from ai_edge_litert import schema_py_generated as schema
    try:
        model = schema.Model.GetRootAs(model_bytes, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() is not None and entry.Name().decode() == name:
                raw = model.Buffers(entry.Buffer()).DataAsNumpy()
                return json.loads(bytes(raw).decode("utf-8"))
    except (ValueError, IndexError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model metadata '{name}' is unreadable: {exc}") from exc
    return {}
