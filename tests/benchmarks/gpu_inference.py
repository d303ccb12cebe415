"""Batched inference by batch size and precision, ONNX Runtime on CUDA against CPU.

    PYTHONPATH=. python tests/benchmarks/gpu_inference.py prepare DIR
    python tests/benchmarks/gpu_inference.py measure DIR OUT
    python tests/benchmarks/gpu_inference.py table OUT/gpu_inference.json

``prepare`` needs the project (it builds the demo models and their FP16/INT8 variants with
``streaminfer models optimize``'s code, plus a wider perceptron built in code) and writes plain
``.onnx`` files and the held-out rows into DIR. ``measure`` needs only numpy, onnxruntime
(``onnxruntime-gpu`` for CUDA) and matplotlib, so it runs on a GPU machine without Kafka or Ray:
for every model file, provider and batch size it times ``session.run`` on numpy input (the
host-to-device copies count, as they do when serving), medians of 3, and writes
``gpu_inference.json``, ``gpu_inference.md`` and ``gpu_inference.png`` into OUT (``table JSON``
prints the markdown again from a JSON file).

A CUDA session is also opened with CPU fallback disabled: where that fails, some operators of the
model have no CUDA kernel (the tree ensembles of ``ai.onnx.ml`` among them) and the "CUDA"
figures are partly CPU work behind copies. The JSON says which.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCHES = (1, 8, 64, 512, 4096, 32768)
ROWS_FILE = "rows.npy"


def prepare(directory: Path) -> None:
    import shutil
    import tempfile

    import onnx
    from onnxconverter_common import float16

    from streaminfer.demo.model import build_demo_mlp, build_demo_model, demo_data
    from streaminfer.workers.models.repository import ModelRepository
    from streaminfer.workers.models.variants import write_variants

    directory.mkdir(parents=True, exist_ok=True)
    repository = ModelRepository(Path(tempfile.mkdtemp()))
    for base in (build_demo_model(repository), build_demo_mlp(repository)):
        write_variants(repository, base)
        for version in repository.versions(base.name):
            precision = version.rsplit("-", 1)[1] if "-" in version else "fp32"
            shutil.copy(repository.load(base.name, version).model_path, directory / f"{base.name}.{precision}.onnx")
    rows = demo_data().x_test
    np.save(directory / ROWS_FILE, rows)
    wide = _wide_perceptron(rows.shape[1], hidden=1024, layers=3)
    onnx.save(wide, str(directory / "wide-mlp.fp32.onnx"))
    onnx.save(float16.convert_float_to_float16(wide, keep_io_types=True), str(directory / "wide-mlp.fp16.onnx"))
    print("\n".join(sorted(p.name for p in directory.iterdir())))


def _wide_perceptron(features: int, hidden: int, layers: int):
    """A perceptron wide enough to give a GPU work: ``layers`` Gemm+Relu of ``hidden`` units."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    nodes, inits, width, name = [], [], features, "input"
    for i in range(layers):
        w = (rng.standard_normal((width, hidden)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.zeros(hidden, np.float32), f"b{i}")]
        nodes += [helper.make_node("Gemm", [name, f"w{i}", f"b{i}"], [f"g{i}"]), helper.make_node("Relu", [f"g{i}"], [f"h{i}"])]
        width, name = hidden, f"h{i}"
    w = (rng.standard_normal((width, 2)) / np.sqrt(width)).astype(np.float32)
    inits += [numpy_helper.from_array(w, "wout"), numpy_helper.from_array(np.zeros(2, np.float32), "bout")]
    nodes += [helper.make_node("Gemm", [name, "wout", "bout"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    graph = helper.make_graph(nodes, "wide_mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def measure(directory: Path, out: Path) -> None:
    import onnxruntime as ort

    out.mkdir(parents=True, exist_ok=True)
    ort.preload_dlls() if hasattr(ort, "preload_dlls") else None
    rows = np.load(directory / ROWS_FILE).astype(np.float32)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    report = {"device": _device_name(), "cpu": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
              "onnxruntime": ort.__version__, "available_providers": ort.get_available_providers(), "results": []}
    for model in sorted(directory.glob("*.onnx")):
        for provider in providers:
            session = _session(ort, model, provider, fallback=True)
            if session is None:
                continue
            entry = {"model": model.stem.split(".")[0], "precision": model.stem.split(".")[1], "provider": provider,
                     "session_providers": session.get_providers(), "rows_per_s": {}, "ms_per_batch": {}}
            if provider == "CUDAExecutionProvider":
                entry["all_nodes_on_cuda"] = _session(ort, model, provider, fallback=False) is not None
            feed_name = session.get_inputs()[0].name
            for batch in BATCHES:
                x = np.resize(rows, (batch, rows.shape[1]))
                seconds = _median_batch_seconds(session, feed_name, x)
                entry["rows_per_s"][batch] = batch / seconds
                entry["ms_per_batch"][batch] = seconds * 1000
            print(json.dumps({k: entry[k] for k in ("model", "precision", "provider")}),
                  {b: f"{r:,.0f}" for b, r in entry["rows_per_s"].items()}, flush=True)
            report["results"].append(entry)
    (out / "gpu_inference.json").write_text(json.dumps(report, indent=2))
    (out / "gpu_inference.md").write_text(markdown(report))
    _plot(report, out / "gpu_inference.png")


def markdown(report: dict) -> str:
    """Rows/s by batch size per model, precision and provider, with CUDA's speed-up over CPU."""
    cpu = {(r["model"], r["precision"]): r["rows_per_s"] for r in report["results"] if r["provider"].startswith("CPU")}
    batches = list(BATCHES)
    lines = [f"# Batched inference on {report['device']} against CPU ({report['cpu']})", "",
             (f"ONNX Runtime {report['onnxruntime']}; `session.run` on numpy input (host-device copies included); "
              "median of 3 timings of at least 0.3 s each. `python tests/benchmarks/gpu_inference.py measure DIR OUT`."), "",
             "| model | precision | provider | all nodes on CUDA | " + " | ".join(f"rows/s @{b}" for b in batches) + " | CUDA/CPU @" + str(batches[-1]) + " |",
             "|---" * (5 + len(batches)) + "|"]
    for r in report["results"]:
        rates = {int(b): v for b, v in r["rows_per_s"].items()}
        on_cuda = {True: "yes", False: "no (CPU fallback)"}.get(r.get("all_nodes_on_cuda"), "–")
        base = cpu.get((r["model"], r["precision"]), {})
        ratio = rates[batches[-1]] / base[str(batches[-1])] if r["provider"].startswith("CUDA") and base else None
        lines.append(f"| {r['model']} | {r['precision']} | {r['provider'].replace('ExecutionProvider', '')} | {on_cuda} | "
                     + " | ".join(f"{rates[b]:,.0f}" for b in batches) + f" | {f'{ratio:.2f}×' if ratio else '–'} |")
    return "\n".join(lines) + "\n"


def _session(ort, model: Path, provider: str, fallback: bool):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not fallback:
        options.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    try:
        session = ort.InferenceSession(str(model), options, providers=[provider])
    except Exception as error:  # noqa: BLE001 - the reason is the figure here
        print(f"{model.name} on {provider}{'' if fallback else ' without CPU fallback'}: {str(error).splitlines()[0][:200]}")
        return None
    if provider not in session.get_providers():
        return None
    return session


def _median_batch_seconds(session, feed_name: str, x: np.ndarray, repeats: int = 3, min_s: float = 0.3) -> float:
    feed = {feed_name: x}
    for _ in range(3):
        session.run(None, feed)
    medians = []
    for _ in range(repeats):
        times, started = [], time.perf_counter()
        while time.perf_counter() - started < min_s or len(times) < 5:
            t = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        medians.append(statistics.median(times))
    return statistics.median(medians)


def _device_name() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20, check=False).stdout.strip() or "no GPU"
    except (OSError, subprocess.SubprocessError):
        return "no GPU"


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in report["results"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, model in zip(axes[0], models):
        for r in (r for r in report["results"] if r["model"] == model):
            batches = [int(b) for b in r["rows_per_s"]]
            style = "-" if r["provider"].startswith("CUDA") else "--"
            label = f"{r['precision']} {r['provider'].replace('ExecutionProvider', '')}"
            if r.get("all_nodes_on_cuda") is False:
                label += " (partly CPU)"
            ax.plot(batches, list(r["rows_per_s"].values()), style, marker="o", label=label)
        ax.set(xscale="log", yscale="log", title=model, xlabel="batch size", ylabel="rows/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"ONNX Runtime {report['onnxruntime']}: {report['device']} vs CPU ({report['cpu']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    command, *args = sys.argv[1:] or ["help"]
    if command == "prepare" and len(args) == 1:
        prepare(Path(args[0]))
    elif command == "measure" and len(args) == 2:
        measure(Path(args[0]), Path(args[1]))
    elif command == "table" and len(args) == 1:
        print(markdown(json.loads(Path(args[0]).read_text())), end="")
    else:
        sys.exit(__doc__)
