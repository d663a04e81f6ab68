#!/usr/bin/env bash
# GPU tests and benchmarks in one run, for a machine with a CUDA GPU (e.g. the `device` tool's lent H200):
#
#   OUT=/tmp/gpu bash benchmarks/gpu.sh          # about 8 minutes; results land in $OUT
#
# Needs ssrl installed with a CUDA build of torch and the gpu extra (`pip install -e '.[test,gpu]'`; on a machine
# without internet, carry wheels: /work/.library/device/README.md). Figures from it go to the README only with
# the machine named. Steps, each logged to $OUT/gpu.log:
#   1. the tests that need CUDA (MuJoCo Warp on CUDA against MuJoCo C, the device replay, CUDA faults);
#   2. bench_batched: MuJoCo Warp on CUDA at 1k-16k envs beside the CPU backend, and the raw-physics table;
#   3. bench_update: SAC and DrQ-v2 updates on the GPU, the reference-style baseline beside ssrl's variants;
#   4. bench_device_replay: GPU replay sampling and SAC on batched envs with a GPU replay.
set -euo pipefail
OUT=${OUT:-/tmp/ssrl-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
  2>&1 | tee "$OUT/gpu.log"
python -m pytest -q tests/test_batched_warp.py tests/test_device_replay.py tests/test_faults.py -k "cuda or warp or device" \
  2>&1 | tee -a "$OUT/gpu.log"
python benchmarks/bench_batched.py --warp --warp-device cuda --warp-envs 1024,4096,16384 --num-envs 1,1024 \
  --physics-tasks dmc/cheetah-run,dmc/walker-walk --rounds 2 --out "$OUT/batched_gpu.json" 2>&1 | tee -a "$OUT/gpu.log"
python benchmarks/bench_update.py --device cuda --agents sac,drqv2 --rounds 3 --updates 20 --out "$OUT/update_gpu.json" \
  2>&1 | tee -a "$OUT/gpu.log"
python benchmarks/bench_device_replay.py --device cuda --envs 1 32 --out "$OUT/device_replay_gpu.json" \
  2>&1 | tee -a "$OUT/gpu.log"
