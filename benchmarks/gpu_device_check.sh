#!/usr/bin/env bash
# The one script to run when a GPU is lent (the device tool's `run`, timeout ~540 s): it installs, runs the
# GPU training table and the serving table, and writes both under $OUT (default ./device-out).
# Budget on an H100/H200: install ~3 min from a local mirror, gpu.py ~3 min, serve.py (resnet50) ~3 min.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-device-out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  # s3, moto[server], pytest: gpu.py's shards-s3 rows (litdata shards on the tests' local moto_server helper);
  # without them those rows say why and the rest of the table still runs
  .venv/bin/pip install -q -c constraints.txt -e ".[serve,s3]" "moto[server]" pytest 2>&1 | tail -3
fi
. .venv/bin/activate
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device visible'; print(torch.cuda.get_device_name(0))"
timeout 300 python benchmarks/gpu.py --steps 30 --warmup 5 --out "$OUT/gpu_table.md" 2>&1 | tee "$OUT/gpu.log" || true
timeout 200 python benchmarks/serve.py --backbone resnet50 --images 512 --batch-size 32 --seconds 6 --servers bincount \
  2>&1 | tee "$OUT/serve.log" || true
