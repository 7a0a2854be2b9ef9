"""Low-level .tflite flatbuffer assembly with the schema's object API (ai_edge_litert ships it)."""
from __future__ import annotations

import json

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as fb

TFLITE_FILE_ID = b"TFL3"
DTYPES = {np.dtype(np.float32): fb.TensorType.FLOAT32, np.dtype(np.int8): fb.TensorType.INT8,
          np.dtype(np.int16): fb.TensorType.INT16, np.dtype(np.int32): fb.TensorType.INT32,
          np.dtype(np.uint8): fb.TensorType.UINT8}


class AlignedBufferT(fb.BufferT):
    """A buffer whose data is 16-byte aligned, as the schema's force_align asks (the generated
    Python packer ignores it); with `release` set, the data is dropped once packed."""

    release = False

    def Pack(self, builder):
        data = None
        if self.data is not None:
            raw = np.ascontiguousarray(self.data).view(np.uint8).reshape(-1)
            builder.StartVector(1, raw.size, 16)
            builder.head = builder.head - raw.size
            builder.Bytes[builder.Head():builder.Head() + raw.size] = raw.tobytes()
            builder.vectorNumElems = raw.size
            data = builder.EndVector()
            if self.release:
                self.data = None             # packed: the builder holds the bytes now (frees large models early)
        fb.BufferStart(builder)
        if data is not None:
            fb.BufferAddData(builder, data)
        return fb.BufferEnd(builder)


def quant_params(scale, zero_point, axis: int = 0) -> fb.QuantizationParametersT:
    """Per-tensor (scalar) or per-channel (array) affine quantisation parameters."""
    q = fb.QuantizationParametersT()
    q.scale = [float(s) for s in np.atleast_1d(scale)]
    q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
    q.quantizedDimension = axis
    return q


_OPTIONS = {
    fb.BuiltinOperator.ADD: (fb.BuiltinOptions.AddOptions, fb.AddOptionsT),
    fb.BuiltinOperator.SUB: (fb.BuiltinOptions.SubOptions, fb.SubOptionsT),
    fb.BuiltinOperator.MUL: (fb.BuiltinOptions.MulOptions, fb.MulOptionsT),
    fb.BuiltinOperator.RESHAPE: (fb.BuiltinOptions.ReshapeOptions, fb.ReshapeOptionsT),
    fb.BuiltinOperator.GATHER: (fb.BuiltinOptions.GatherOptions, fb.GatherOptionsT),
    fb.BuiltinOperator.LEAKY_RELU: (fb.BuiltinOptions.LeakyReluOptions, fb.LeakyReluOptionsT),
    fb.BuiltinOperator.CONCATENATION: (fb.BuiltinOptions.ConcatenationOptions, fb.ConcatenationOptionsT),
    fb.BuiltinOperator.MEAN: (fb.BuiltinOptions.ReducerOptions, fb.ReducerOptionsT),
    fb.BuiltinOperator.PADV2: (fb.BuiltinOptions.PadV2Options, fb.PadV2OptionsT),
    fb.BuiltinOperator.TRANSPOSE: (fb.BuiltinOptions.TransposeOptions, fb.TransposeOptionsT),
    fb.BuiltinOperator.RESIZE_BILINEAR: (fb.BuiltinOptions.ResizeBilinearOptions, fb.ResizeBilinearOptionsT),
    fb.BuiltinOperator.RESIZE_NEAREST_NEIGHBOR: (fb.BuiltinOptions.ResizeNearestNeighborOptions,
                                                 fb.ResizeNearestNeighborOptionsT),
}


def builtin_options(code: int, **fields) -> tuple[int, object]:
    """(options type, options object) for builtin op `code` with `fields` set (e.g. axis=1, alpha=0.2); a fused
    activation is NONE. Ops without an entry here take no options: (0, None)."""
    if code not in _OPTIONS:
        if fields:
            raise ValueError(f"builtin op {code} takes no options here, got {sorted(fields)}")
        return 0, None
    options_type, cls = _OPTIONS[code]
    opts = cls()
    if hasattr(opts, "fusedActivationFunction"):
        opts.fusedActivationFunction = fb.ActivationFunctionType.NONE
    for name, value in fields.items():
        if not hasattr(opts, name):
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        setattr(opts, name, value)
    return options_type, opts


class GraphBuilder:
    """Accumulates tensors, buffers and operators of a single-subgraph model."""

    def __init__(self):
        self.buffers: list = [AlignedBufferT()]          # buffer 0 is the conventional empty buffer
        self.tensors: list = []
        self.operators: list = []
        self.opcodes: dict[tuple[int, int], int] = {}
        self.codes: list = []

    def tensor(self, name: str, shape, dtype, data: np.ndarray | None = None,
               quant: fb.QuantizationParametersT | None = None, sparsity=None) -> int:
        """Add a tensor (constant when `data` is given); returns its index."""
        t = fb.TensorT()
        t.name, t.shape, t.type = name, [int(s) for s in shape], DTYPES[np.dtype(dtype)]
        t.buffer = 0
        if data is not None:
            buf = AlignedBufferT()
            buf.data = np.ascontiguousarray(data, dtype=dtype)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        t.quantization, t.sparsity = quant, sparsity
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code: int, inputs: list[int], outputs: list[int], options_type: int = 0,
           options=None, version: int = 1) -> None:
        """Add a builtin operator."""
        key = (code, version)
        if key not in self.opcodes:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            self.opcodes[key] = len(self.codes)
            self.codes.append(oc)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes[key], inputs, outputs
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def reshape(self, x: int, out: int, shape: list[int], name: str) -> None:
        """RESHAPE tensor `x` into tensor `out` of `shape` (the shape also as a constant input)."""
        shape_t = self.tensor(f"{name}/shape", [len(shape)], np.int32, np.array(shape, np.int32))
        self.op(fb.BuiltinOperator.RESHAPE, [x, shape_t], [out], *builtin_options(fb.BuiltinOperator.RESHAPE,
                                                                                  newShape=list(shape)))

    def finish(self, inputs: list[int], outputs: list[int], metadata: dict | None = None,
               description: str = "keycam", release: bool = False) -> bytes | bytearray:
        """Serialise to .tflite bytes, embedding `metadata` as JSON under the name 'keycam' (a bytearray above
        64 MiB: a large model is not copied once more). `release`: drop every buffer's data as it is packed
        (the builder cannot finish again)."""
        sub = fb.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = (
            self.tensors, inputs, outputs, self.operators, "main")
        model = fb.ModelT()
        model.version, model.operatorCodes, model.subgraphs, model.description = 3, self.codes, [sub], description
        model.buffers = list(self.buffers)
        for buf in model.buffers:
            buf.release = release
        if metadata is not None:
            buf = AlignedBufferT()
            buf.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
            model.buffers.append(buf)
            entry = fb.MetadataT()
            entry.name, entry.buffer = "keycam", len(model.buffers) - 1
            model.metadata = [entry]
        builder = flatbuffers.Builder(_packed_size_bound(model))      # sized once: no doubling copies
        builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_ID)
        out = builder.Bytes
        del out[:builder.Head()]             # in place (CPython moves the start): no second copy of the model
        return bytes(out) if len(out) < 1 << 26 else out


def _packed_size_bound(model) -> int:
    """An upper bound of the packed size: buffer bytes, sparse index vectors, 16-byte alignment, tables."""
    size = 1 << 20
    for b in model.buffers:
        size += (0 if b.data is None else np.asarray(b.data).nbytes) + 32
    for t in model.subgraphs[0].tensors:
        size += 256 + 16 * len(t.name)
        for dim in (t.sparsity.dimMetadata if t.sparsity is not None else []) or []:
            for vec in (dim.arraySegments, dim.arrayIndices):
                size += 0 if vec is None else np.asarray(vec.values).nbytes + 16
    return size + 64 * len(model.subgraphs[0].operators) * 4
