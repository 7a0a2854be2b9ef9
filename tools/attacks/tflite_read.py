"""Read what an attacker sees in a keyed .tflite: the first sparse layer's CSR support pattern."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from ai_edge_litert import schema_py_generated as fb

from tools.attacks.target import AttackError


def _index_values(vec) -> np.ndarray:
    return np.asarray(vec.values, dtype=np.int64)


def first_sparse_layer(blob: bytes) -> sp.csr_matrix:
    """The weight of the first CSR-sparse FULLY_CONNECTED op as a scipy matrix (rows = outputs, cols = inputs).

    Raises AttackError when the model has no sparse layer (the structure attack does not apply).
    """
    model = fb.ModelT.InitFromPackedBuf(blob, 0)
    graph = model.subgraphs[0]
    fc_codes = {i for i, c in enumerate(model.operatorCodes)
                if max(c.builtinCode, c.deprecatedBuiltinCode) == fb.BuiltinOperator.FULLY_CONNECTED}
    for op in graph.operators:
        if op.opcodeIndex not in fc_codes:
            continue
        t = graph.tensors[op.inputs[1]]
        if t.sparsity is None:
            continue
        rows, cols = int(t.shape[0]), int(t.shape[1])
        dims = t.sparsity.dimMetadata
        if len(dims) != 2 or dims[1].format != fb.DimensionType.SPARSE_CSR or list(t.sparsity.traversalOrder) != [0, 1]:
            raise AttackError("the sparse layer is not in the row-major CSR layout this attack reads")
        indptr, indices = _index_values(dims[1].arraySegments), _index_values(dims[1].arrayIndices)
        data = np.frombuffer(bytes(model.buffers[t.buffer].data), np.float32)
        return sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
    raise AttackError("the model has no sparse FULLY_CONNECTED layer: nothing for the structure attack to read")
