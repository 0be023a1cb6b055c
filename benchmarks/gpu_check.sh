#!/usr/bin/env bash
# The GPU checks of issue #12 as one prepared run, for a machine with one CUDA GPU and its own
# PyTorch (no install, no network): the CUDA tests, `roaming bench --preset paper` on the GPU in
# fp32 and bf16, NCHW against NHWC, and how K training processes share the GPU
# (`resources.runs_per_gpu`).
#
#   bash benchmarks/gpu_check.sh                 # results in ./gpu-check, or in $OUT if set
#
# roaming needs jsonschema, which such machines may lack: the wheels in `.whl/` (ignored by git),
# if any, are unpacked into /tmp/site first. Made on a machine with pip, for the GPU machine's
# Python (3.12 here; `attrs` too where it lacks that):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_17_x86_64 -d .whl \
#     jsonschema jsonschema-specifications referencing rpds-py
# Each part has its own time limit (about 9 minutes in all), so one that overruns leaves the
# others' results; every part writes as it goes. Six files come out.
set -u
out="${OUT:-gpu-check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src"
if [ -d .whl ]; then
  for wheel in .whl/*.whl; do python3 -m zipfile -e "$wheel" /tmp/site; done
  PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

{
  nvidia-smi
  uptime
  python3 -V
  python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"
  python3 -c "import jsonschema, roaming.bench; print('roaming imports')"
} >"$out/machine.txt" 2>&1

# Skipping exact on CUDA (the grouped-convolution fused pass), whole training steps, SegNet's
# unpooling assumption, and no host synchronisation per training batch.
timeout 100 python3 -m pytest -q -p no:cacheprovider -rs -k "cuda or never_wait" \
  tests/test_skip.py tests/test_train.py >"$out/tests.txt" 2>&1
echo "exit status $?" >>"$out/tests.txt"

timeout 170 python3 -m roaming bench --preset paper --device cuda >"$out/bench_fp32.md" 2>&1
echo "exit status $?" >>"$out/bench_fp32.md"
timeout 110 python3 -m roaming bench --preset paper --device cuda --precision bf16 \
  >"$out/bench_bf16.md" 2>&1
echo "exit status $?" >>"$out/bench_bf16.md"

# NCHW (the GPU default) against NHWC, dense steps at CelebA's and NYUv2's paper shapes.
for layout in "" "--channels-last"; do
  echo "== ${layout:-NCHW}"
  timeout 30 python3 benchmarks/train_step.py --device cuda --width 1 --batch-size 256 \
    --variants mtl "mr per_task" --steps 10 $layout
  timeout 30 python3 benchmarks/train_step.py --device cuda --width 1 --dataset nyuv2 \
    --batch-size 2 --height 288 --width-px 384 --variants mtl "mr joint" --steps 5 $layout
done >"$out/formats.txt" 2>&1

# K processes training CelebA MR (paper shapes) on the one GPU at once: does the sum of their
# steps/s grow with K?
for k in 1 2 4; do
  for i in $(seq "$k"); do
    timeout 30 python3 benchmarks/train_step.py --device cuda --width 1 --batch-size 256 \
      --variants "mr per_task" --steps 20 >"/tmp/share_${k}_${i}.txt" 2>&1 &
  done
  wait
  for i in $(seq "$k"); do
    echo "== K = $k, process $i" && cat "/tmp/share_${k}_${i}.txt"
  done >>"$out/share.txt"
done
