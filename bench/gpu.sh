#!/usr/bin/env bash
# The CUDA checks and the GPU training benchmark, on a machine with a GPU (issue 13: "CUDA checked").
#
#   bash bench/gpu.sh                 # from the repository root, in the environment qualiface is installed in
#
# 1. python -m pytest -m gpu: the tests of tests/gpu (heads on CUDA equal to the CPU, fp32/bf16/fp16 training
#    steps, NCCL with two or more GPUs, ONNX on onnxruntime's CUDA provider); every skip prints its reason
#    (e.g. one GPU: no NCCL run; the CPU-only onnxruntime package: no CUDA provider).
# 2. python bench/train.py --device cuda: the trainer's step against a bare PyTorch loop on the first GPU, in
#    fp32, bf16 and fp16 (with a GradScaler), for mobilefacenet and iresnet50 at batch 128.
#
# Writes bench/results/gpu_<date>/: environment.txt (GPU, driver, torch, CUDA, onnxruntime providers),
# pytest.txt and pytest.xml (JUnit; the ONNX test records which provider ran as the property onnx_providers),
# train.json and train.md (the benchmark's record and table). Exits with pytest's status when the tests fail.
set -uo pipefail
cd "$(dirname "$0")/.."
python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else "bench/gpu.sh: torch.cuda.is_available() is False")' || exit 2

out="bench/results/gpu_$(date +%Y-%m-%d)"
mkdir -p "$out"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not found"
    python - <<'PY'
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
      f"{torch.cuda.device_count()} device(s): {', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))}; "
      f"bf16: {torch.cuda.is_bf16_supported()}")
try:
    import onnxruntime as ort
    print(f"onnxruntime {ort.__version__}, device {ort.get_device()}, providers {ort.get_available_providers()}")
except ImportError as exc:
    print(f"onnxruntime: not importable ({exc})")
PY
} | tee "$out/environment.txt"

python -m pytest -m gpu -q -p no:cacheprovider --junitxml "$out/pytest.xml" 2>&1 | tee "$out/pytest.txt"
tests=${PIPESTATUS[0]}

python bench/train.py --device cuda --parts step --backbones mobilefacenet iresnet50 --precisions fp32 bf16 fp16 \
    --batch 128 --threads 8 --e2e-workers 4 --out "$out/train.json" | tee "$out/train.md"
bench=${PIPESTATUS[0]}

echo "bench/gpu.sh: pytest -m gpu exit ${tests}, bench/train.py exit ${bench}; results in ${out}"
if [ "$tests" -ne 0 ]; then exit "$tests"; fi
exit "$bench"
