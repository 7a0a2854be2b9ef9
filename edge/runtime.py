"""Thin wrapper around the TFLite interpreter (ai_edge_litert, the device extra's runtime).

`TFLiteModel` takes uint8 ADC frames (or float frames in [0, 1]) and returns float outputs: it owns
the conversion into the model's input type and out of its output quantisation, so every caller
(demo, service, bench, health check) runs models the same way.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from base.errors import ModelError

RUNTIME_NAME = "ai_edge_litert"   # the one runtime (model metadata is read with its flatbuffer schema too)

METADATA_NAME = "keycam"
# printed by the C++ runtime straight to file descriptor 2 for every interpreter; no setting turns it off
_RUNTIME_NOISE = re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.\r?\n?", re.M)


@contextlib.contextmanager
def _filtered_native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 while the C++ runtime sets up an interpreter, then pass everything on
    except its XNNPACK INFO line (so command output stays clean; real errors still show)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            rest = _RUNTIME_NOISE.sub(b"", capture.read())
            if rest:
                os.write(2, rest)


def read_metadata(model_bytes: bytes) -> dict:
    """Return the keycam JSON metadata embedded in a .tflite file ({} if there is none)."""
    from edge.tflite_metadata import extract_metadata
    return extract_metadata(model_bytes, METADATA_NAME)


class TFLiteModel:
    """A loaded .tflite model with frame-in, float-out inference."""

    def __init__(self, model: str | Path | bytes, num_threads: int = 1):
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise ModelError(f"model file not found: {path}")
            model = path.read_bytes()
        self.model_bytes = bytes(model)
        try:
            with _filtered_native_stderr():
                self.interpreter = Interpreter(
                    model_content=self.model_bytes, num_threads=num_threads,
                    experimental_op_resolver_type=OpResolverType.AUTO)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load TFLite model: {exc}") from exc
        self.metadata = read_metadata(self.model_bytes)
        self._input = self.interpreter.get_input_details()[0]
        self._output = self.interpreter.get_output_details()[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input frame as the model expects it, without the batch axis."""
        return tuple(int(d) for d in self._input["shape"][1:])

    @property
    def input_size(self) -> int:
        """Number of values in one input frame."""
        return int(np.prod(self.input_shape))

    @property
    def input_dtype(self) -> np.dtype:
        return np.dtype(self._input["dtype"])

    def _prepare(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.size != self.input_size:
            raise ModelError(f"frame has {frame.size} values, the model expects {self.input_size} "
                             f"(shape {self.input_shape})")
        x = frame.astype(np.float32) / 255.0 if frame.dtype == np.uint8 else frame.astype(np.float32)
        x = x.reshape((1,) + self.input_shape)
        if self.input_dtype == np.float32:
            return x
        scale, zero = self._input["quantization"]
        info = np.iinfo(self.input_dtype)
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(self.input_dtype)

    def invoke(self, frame: np.ndarray) -> np.ndarray:
        """Run one frame (uint8 ADC counts or float in [0, 1]); return the float output vector."""
        self.interpreter.set_tensor(self._input["index"], self._prepare(frame))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self._output["index"])
        if out.dtype != np.float32:
            scale, zero = self._output["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        return out.reshape(-1)

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Run a batch of frames one by one; return (B, outputs) float32."""
        return np.stack([self.invoke(f) for f in frames])

    def describe(self) -> str:
        return json.dumps({"runtime": RUNTIME_NAME, "input": self.input_shape,
                           "dtype": str(self.input_dtype), "metadata": self.metadata})
