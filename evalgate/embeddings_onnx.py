"""all-MiniLM-L6-v2 on ONNX Runtime: the numpy encoder's math, run by ORT's kernels.

Same tokenizer, same weights, same embedding layer and pooling as
:class:`evalgate.embeddings.NumpyEncoder` (in numpy: a gather and a layer norm); only the
six transformer layers run in an ONNX Runtime session, whose graph is built here from the
safetensors weights (no export step, no file on disk, no torch). Vectors match the numpy
encoder to about 2e-7 per component, so the model's identity (and every certified
threshold) is unchanged.

Why: on this 2-core machine one short text costs ~7 ms of CPU in numpy and ~4 ms in ORT
(load 5; both more under heavier load). A 16-token text is 340 MFLOP in the layers, ~3.5 ms
at this core's best float32 GEMM rate; numpy's matrix products inside a forward pass ran
~2.5x slower than the same products on hot weights (OpenBLAS packs each 0.6-2.4 MB weight
matrix on every call, and 42 MB of weights pass through the cache), while ORT packs the
weights once per session. The session runs one intra-op thread: the cores are shared, and a
spinning thread pool stalls a loaded machine (the same reason NumpyEncoder runs BLAS
single-threaded); batches are parallelised over sub-batches by the parent class.

Needs ``onnxruntime`` and ``onnx`` (``pip install 'evalgate[embeddings-fast]'``); both are
imported only when this encoder is built.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalgate.embeddings import DEFAULT_CACHE_SIZE, NumpyEncoder
from evalgate.errors import MissingModelError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

INSTALL_HINT = "pip install 'evalgate[embeddings-fast]' (onnxruntime and onnx)"
_OPSET = 18


def onnx_available() -> bool:
    """True when onnxruntime and onnx are importable (without importing them)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


class OnnxEncoder(NumpyEncoder):
    """all-MiniLM-L6-v2 with its transformer layers on ONNX Runtime (see the module).

    Args:
        path: model folder (default: :func:`evalgate.embeddings.model_dir`).
        cache_size: LRU capacity in texts; 0 disables the cache.
    """

    def __init__(self, path: Path | None = None, *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        super().__init__(path, cache_size=cache_size)
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingModelError(f"the onnx embedding backend needs {INSTALL_HINT}") from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused fusions are noise here
        self._session = ort.InferenceSession(
            self._graph(), options, providers=["CPUExecutionProvider"]
        )
        self._layers = []  # ORT holds its own (pre-packed) copy of the layer weights

    def _graph(self) -> bytes:
        """The six layers as a serialised ONNX model: ``x (B,T,D), bias (B,1,1,T) -> y``."""
        try:
            import numpy as np
            from onnx import TensorProto, helper, numpy_helper
        except ImportError as exc:
            raise MissingModelError(f"the onnx embedding backend needs {INSTALL_HINT}") from exc

        nodes: list[Any] = []
        weights: list[Any] = []

        def const(name: str, value: Any) -> str:
            weights.append(numpy_helper.from_array(np.asarray(value), name))  # 0-d stays 0-d
            return name

        def op(kind: str, *inputs: str, **attrs: Any) -> str:
            out = f"t{len(nodes)}"
            nodes.append(helper.make_node(kind, list(inputs), [out], name=out, **attrs))
            return out

        def linear(x: str, name: str, params: tuple[Any, Any]) -> str:
            return op(
                "Add", op("MatMul", x, const(name + ".w", params[0])), const(name + ".b", params[1])
            )

        h, d = self._heads, self.dim
        split = const("split_heads", np.array([0, 0, 3, h, d // h], dtype=np.int64))
        merge = const("merge_heads", np.array([0, 0, d], dtype=np.int64))
        half, one = const("half", np.float32(0.5)), const("one", np.float32(1.0))
        root_half = const("root_half", np.float32(1.0 / np.sqrt(2.0)))
        x = "x"
        for i, layer in enumerate(self._layers):
            p = f"l{i}."
            # (B, T, 3D) -> (3, B, H, T, hd); Q is pre-scaled by 1/sqrt(hd) in the weights.
            qkv = op(
                "Transpose",
                op("Reshape", linear(x, p + "qkv", layer["qkv"]), split),
                perm=[2, 0, 3, 1, 4],
            )
            q, k, v = (op("Gather", qkv, const(f"{p}i{j}", np.int64(j)), axis=0) for j in range(3))
            scores = op("Add", op("MatMul", q, op("Transpose", k, perm=[0, 1, 3, 2])), "bias")
            ctx = op("MatMul", op("Softmax", scores, axis=-1), v)
            ctx = op("Reshape", op("Transpose", ctx, perm=[0, 2, 1, 3]), merge)
            x = op(
                "LayerNormalization",
                op("Add", linear(ctx, p + "attn_out", layer["attn_out"]), x),
                const(p + "attn_ln.w", layer["attn_ln"][0]),
                const(p + "attn_ln.b", layer["attn_ln"][1]),
                axis=-1,
                epsilon=self._eps,
            )
            inter = linear(x, p + "inter", layer["inter"])
            # Exact GELU, 0.5 * x * (1 + erf(x / sqrt 2)), as the model was trained.
            erf = op("Add", op("Erf", op("Mul", inter, root_half)), one)
            gelu = op("Mul", op("Mul", inter, half), erf)
            x = op(
                "LayerNormalization",
                op("Add", linear(gelu, p + "out", layer["out"]), x),
                const(p + "out_ln.w", layer["out_ln"][0]),
                const(p + "out_ln.b", layer["out_ln"][1]),
                axis=-1,
                epsilon=self._eps,
            )
        nodes.append(helper.make_node("Identity", [x], ["y"], name="y"))
        floats = TensorProto.FLOAT
        graph = helper.make_graph(
            nodes,
            "all-MiniLM-L6-v2-layers",
            [
                helper.make_tensor_value_info("x", floats, ["B", "T", d]),
                helper.make_tensor_value_info("bias", floats, ["B", 1, 1, "T"]),
            ],
            [helper.make_tensor_value_info("y", floats, ["B", "T", d])],
            weights,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
        model.ir_version = 9  # understood by every onnxruntime since 1.15
        return bytes(model.SerializeToString())

    def _transformer(
        self, x: NDArray[np.float32], bias: NDArray[np.float32]
    ) -> NDArray[np.float32]:
        (tokens,) = self._session.run(["y"], {"x": x, "bias": bias})
        return tokens
