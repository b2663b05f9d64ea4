#!/usr/bin/env bash
# The GPU checks of the speed work in one run on a CUDA machine: the CUDA tests, then the
# training, pre-training and log-Mel benchmarks with --device cuda. Every step's output goes to
# $OUT/<step>.log (default outputs/cuda-checks/), and $OUT/summary.txt lists each step's exit
# code, so a step that fails or hangs costs its own time limit and leaves the others theirs.
# The limits add up to 525 s: one call of the device tool (timeout_s 570) runs them all.
#
# On a machine with the project's environment:
#     PY=.venv/bin/python bash benchmarks/cuda_checks.sh
#
# On a lent device machine whose image holds PyTorch but not all of this project's packages
# (it reaches no package index), first fetch what it lacks, here:
#     make device-wheels      # .whl/: soundfile and cffi for that machine's Python 3.12
# then run this script there with .whl carried along. imageio-ffmpeg's wheel (68 MB) is too big
# to carry: a stand-in module is installed whose get_ffmpeg_exe() finds an ffmpeg on the PATH
# or fails naming the missing program, so only the test that writes raw clips depends on it.
set -uo pipefail

OUT=${OUT:-outputs/cuda-checks}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [ -d .whl ]; then
  site=/tmp/cormult-site
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl || exit 1
  if ! "$PY" -c "import imageio_ffmpeg" 2>/dev/null; then
    mkdir -p "$site/imageio_ffmpeg"
    cat >"$site/imageio_ffmpeg/__init__.py" <<'PYTHON'
"""Stand-in for imageio-ffmpeg on a machine without it (benchmarks/cuda_checks.sh)."""
import shutil


def get_ffmpeg_exe() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise RuntimeError("no ffmpeg on this machine: imageio-ffmpeg is not installed here")
    return found
PYTHON
  fi
  export PYTHONPATH="$PYTHONPATH:$site"
fi

summary=()
step() {  # step NAME SECONDS COMMAND...: run COMMAND for at most SECONDS into $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  echo "=== $name (at most ${limit} s): $*"
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local code=${PIPESTATUS[0]}
  summary+=("$name: exit $code$([ "$code" = 124 ] && echo ' (timed out)')")
}

step environment 45 "$PY" -c "
import torch
print('torch', torch.__version__, '| CUDA', torch.version.cuda)
print('device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')
import cormult_lib.training.supervised, cormult_lib.features.audio  # every import resolves
"
# --noconftest: the root conftest serves the notebooks (nbformat) and no CUDA test needs it.
step cuda_tests 180 "$PY" -m pytest -q -rs -p no:cacheprovider --noconftest \
  tests/test_cuda.py tests/test_audio_features.py tests/test_negatives.py -k cuda
step training_benchmark 120 "$PY" benchmarks/training_benchmark.py --device cuda \
  --settings quick paper official --data
step training_compiled 90 "$PY" benchmarks/training_benchmark.py --device cuda --compile \
  --settings quick
step pretrain_epoch 60 "$PY" benchmarks/pretrain_epoch_benchmark.py --device cuda \
  --samples 2300 --epochs 2
step logmel 30 "$PY" benchmarks/logmel_benchmark.py --device cuda --batch 32 --seconds 10

printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
