#!/usr/bin/env bash
# The GPU checks in one go: the CUDA tests, then the GPU throughput benchmark (training samples/s
# and rendering rays/s on CUDA against the CPU). About 5 minutes on one GPU.
#
#   bash benchmarks/gpu_check.sh            # log: ${OUT:-.}/gpu_check.log
#
# Needs torch with CUDA (any version the package supports) and the package's dependencies; no
# tinycudann (its parity test then skips, with the reason in the log) and no internet. The package
# is used from this checkout through PYTHONPATH; nothing is installed. Every step runs even when
# an earlier one failed; the summary at the end lists the failures and the exit code counts them.
set -x
cd "$(dirname "$0")/.." || exit 1
LOG="${OUT:-.}/gpu_check.log"
mkdir -p "$(dirname "$LOG")"
exec > >(tee "$LOG") 2>&1
WORK="$(mktemp -d /tmp/birdnerf_gpu_check.XXXXXX)"
# The command line installs as `birdnerf_cli` (see pyproject.toml): a link stands in for it.
mkdir -p "$WORK/path" && ln -s "$PWD/cli" "$WORK/path/birdnerf_cli"
export PYTHONPATH="$PWD:$WORK/path${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
failed=()

step() {
    local name=$1
    shift
    echo "=== step: $name"
    local start=$SECONDS
    "$@"
    local rc=$?
    if [ $rc -eq 0 ]; then
        echo "=== $name: ok ($((SECONDS - start)) s)"
    else
        echo "=== $name: FAILED with exit code $rc ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

step environment python3 - <<'PY'
import importlib, platform, sys
import torch
print("python", sys.version.split()[0], platform.machine())
print("torch", torch.__version__, "cuda build", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))
for name in ("numpy", "PIL", "typer", "rich", "matplotlib", "pytest", "tinycudann"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "present"))
    except Exception as err:
        print(name, "MISSING:", type(err).__name__, err)
PY
step import python3 -c "import birdnerf.train, birdnerf.composite, birdnerf.eval, birdnerf.field.tcnn_layout, birdnerf_cli.main; print('birdnerf imports')"
step cuda-tests timeout 240 python3 -m pytest -q -rs -p no:cacheprovider --basetemp "$WORK/pytest" \
    tests/test_device.py tests/test_pixels.py
step benchmark timeout 300 python3 benchmarks/bench_gpu.py --out "$WORK/bench"
rm -rf "$WORK"
set +x
echo "=== summary: ${#failed[@]} failed step(s)${failed[*]:+: ${failed[*]}}"
exit ${#failed[@]}
