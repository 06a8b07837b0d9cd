"""The arithmetic side of the benchmark: what the model costs, and what the CPU can do.

  flops.py model ONNX_FILE (--lengths-from FILE | --lengths 52,80)
      Multiply-add work of one text, counted from the ONNX graph: every MatMul / Gemm /
      MatMulInteger node's 2*M*K*N, with the graph's shapes inferred (ONNX Runtime's symbolic
      shape inference) for batch 1 at sequence lengths 16, 64 and 256, fitted exactly by
      FLOPs(L) = a*L + b*L^2 (+ c), then averaged over the given token counts (one per line: what
      `senti-bench-raw --lengths-out` writes for the benchmark's payload).
  flops.py peak [--seconds S]
      The CPU's measured matrix-multiply peak, repeated for S seconds per setting, best of each,
      on one thread and on every core: numpy float32 matmul of 2048 and 4096 square matrices
      (OpenBLAS; one subprocess per setting, thread variables set before numpy loads), and ONNX
      Runtime's own kernels on 2048 square matrices: float32 MatMul and int8 MatMulInteger (the
      kernel of the dynamically quantized int8 model).
Both print one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

MATMULS = {"MatMul", "Gemm", "MatMulInteger", "FusedMatMul"}


def graph_flops(path: Path, length: int) -> float:
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    model = onnx.load(str(path))
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) == 2:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = 1
            dims[1].ClearField("dim_param")
            dims[1].dim_value = length
    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    total = 0.0
    for node in inferred.graph.node:
        if node.op_type not in MATMULS:
            continue
        a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
        if not a or not b or None in a or None in b:
            raise SystemExit(f"{path}: cannot infer the shapes of {node.op_type} {node.name}: {a} x {b}")
        if node.op_type == "Gemm":
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
            n = b[0] if trans_b else b[1]
            total += 2.0 * m * k * n
            continue
        batch = 1
        for d in (a[:-2] if len(a) > 2 else []):
            batch *= d
        m = a[-2] if len(a) >= 2 else 1
        k = a[-1]
        n = b[-1]
        total += 2.0 * batch * m * k * n
    return total


def model_command(args) -> dict:
    points = {L: graph_flops(args.onnx, L) for L in (16, 64, 256)}
    # Exact fit of c + a*L + b*L^2 through the three points.
    (l1, f1), (l2, f2), (l3, f3) = points.items()
    import numpy as np

    c, a, b = np.linalg.solve(np.array([[1, l1, l1 * l1], [1, l2, l2 * l2], [1, l3, l3 * l3]], dtype=float), np.array([f1, f2, f3]))
    if args.lengths_from:
        lengths = [int(x) for x in Path(args.lengths_from).read_text().split()]
    else:
        lengths = [int(x) for x in args.lengths.split(",")]
    per_text = [c + a * L + b * L * L for L in lengths]
    return {
        "onnx": str(args.onnx),
        "flops_at_length": {str(L): f for L, f in points.items()},
        "flops_constant": c,
        "flops_per_token_linear": a,
        "flops_attention_quadratic": b,
        "texts": len(lengths),
        "mean_tokens": sum(lengths) / len(lengths),
        "mean_flops_per_text": sum(per_text) / len(per_text),
    }


PEAK_CHILD = """
import json, sys, time
import numpy as np
seconds = float(sys.argv[1])
best = 0.0
for n in (2048, 4096):
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    a @ b
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        a @ b
        best = max(best, 2.0 * n ** 3 / (time.perf_counter() - t) / 1e9)
print(json.dumps(best))
"""


def ort_peak(op: str, threads: int, seconds: float, n: int = 2048) -> float:
    """Best GFLOP/s (GOP/s for int8) of one n x n x n product by ONNX Runtime's own kernels (MLAS),
    the ones the model runs: MatMul in float32, MatMulInteger (uint8 x int8 -> int32) for int8."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if op == "MatMul":
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = numpy_helper.from_array(rng.standard_normal((n, n), dtype=np.float32), "B")
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.FLOAT, TensorProto.FLOAT
    else:
        a = rng.integers(0, 255, (n, n), dtype=np.uint8)
        b = numpy_helper.from_array(rng.integers(-127, 127, (n, n), dtype=np.int8), "B")
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    graph = helper.make_graph(
        [node], "peak", [helper.make_tensor_value_info("A", a_type, [n, n])], [helper.make_tensor_value_info("Y", y_type, [n, n])], [b]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    session.run(None, {"A": a})
    best = 0.0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, {"A": a})
        best = max(best, 2.0 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def peak_command(args) -> dict:
    import numpy as np

    results = {}
    cores = os.cpu_count() or 1
    for op, key in (("MatMul", "ort_fp32_gflops"), ("MatMulInteger", "ort_int8_gops")):
        results[f"{key}_one_core"] = ort_peak(op, 1, args.seconds)
        results[f"{key}_all_cores"] = ort_peak(op, cores, args.seconds)
    for label, threads in (("one_core_gflops", 1), ("all_cores_gflops", os.cpu_count() or 1)):
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        out = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(args.seconds)], env=env, check=True, capture_output=True, text=True)
        results[label] = json.loads(out.stdout)
    config = np.show_config(mode="dicts") if "mode" in np.show_config.__code__.co_varnames else {}
    blas = config.get("Build Dependencies", {}).get("blas", {}) if isinstance(config, dict) else {}
    results["blas"] = f"{blas.get('name', 'unknown BLAS')} {blas.get('version', '')}".strip()
    results["threads_all_cores"] = os.cpu_count()
    results["matrix_sizes"] = [2048, 4096]
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    m = sub.add_parser("model")
    m.add_argument("onnx", type=Path)
    g = m.add_mutually_exclusive_group(required=True)
    g.add_argument("--lengths-from", type=Path)
    g.add_argument("--lengths")
    k = sub.add_parser("peak")
    k.add_argument("--seconds", type=float, default=3.0)
    args = p.parse_args()
    started = time.perf_counter()
    result = model_command(args) if args.command == "model" else peak_command(args)
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
