#!/usr/bin/env bash
# On the device machine (Python 3.12, numpy/onnx/onnxruntime(-gpu)/scikit-learn already there, no
# package registry): install the wheels carried with the working tree, then measure the whole
# pipeline on CUDA (and TensorRT) against the machine's CPUs. Results land in $OUT.
#
#   here:    PYTHONPATH=. python -m tests.benchmarks.gpu_pipeline prepare .gpu-pipeline
#            PYTHONPATH=. python -m tests.benchmarks.gpu_pipeline wheels .gpu-pipeline
#   device:  one call per wheels-N part with carry [".gpu-pipeline/wheels-N"] (the parts stay
#            there between calls), the last one also carrying .gpu-pipeline/models and rows.npy:
#            bash tests/benchmarks/gpu_pipeline_device.sh .gpu-pipeline [measure options]
set -euo pipefail
dir=${1:?usage: gpu_pipeline_device.sh DIR [measure options]}
shift
python=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
"$python" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"

wheels="$dir/wheels"
"$python" - "$dir" <<'PY'
# whole wheels are copied; a wheel carried in pieces (NAME.partNN, in order) is joined
import collections, pathlib, sys
directory = pathlib.Path(sys.argv[1])
out = directory / "wheels"
out.mkdir(exist_ok=True)
pieces = collections.defaultdict(list)
for path in directory.glob("wheels-*/*"):
    if ".whl.part" in path.name:
        pieces[path.name.rsplit(".part", 1)[0]].append(path)
    elif path.suffix == ".whl":
        (out / path.name).write_bytes(path.read_bytes())
for name, parts in pieces.items():
    (out / name).write_bytes(b"".join(p.read_bytes() for p in sorted(parts, key=lambda p: p.name)))
print(len(list(out.glob("*.whl"))), "wheels ready")
PY
"$python" -m pip install --quiet --no-index --find-links "$wheels" "$wheels"/*.whl
"$python" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .

out=${OUT:-$dir/out}
PYTHONPATH=. "$python" -m tests.benchmarks.gpu_pipeline measure "$dir" "$out" "$@"
