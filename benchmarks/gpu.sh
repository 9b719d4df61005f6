#!/usr/bin/env bash
# One-command check of attrfx on a CUDA GPU: the device-marked tests and the quick benchmark.
#
#     bash benchmarks/gpu.sh [OUTPUT_FOLDER]        # default: gpu-results/
#
# Needs a CUDA GPU and a CUDA build of torch already installed (this script never installs torch).
# Captum 0.9.0 (the test oracle) comes from the wheels in .whl/ when that folder exists, installed
# offline into a separate folder put on PYTHONPATH; otherwise the missing test packages come from
# pip, with torch pinned to the installed build. attrfx itself runs from the repository (PYTHONPATH).
# Steps, each under its own time limit (475 s in all), each run even when an earlier one failed:
#   nvidia-smi (15 s), versions and the CUDA check (45 s), install (45 s), imports (30 s),
#   `pytest -m device` (120 s), `benchmarks.run --device cuda --quick` (220 s).
# Everything lands in OUTPUT_FOLDER: one log per step, summary.txt, pytest-device.xml, and the
# benchmark's RESULTS-cuda-quick.md and results-cuda-quick.json (benchmarks/RESULTS*.md stay as they are).
# Exit status: 0 when every step passed, 1 when one failed, 2 when there is no CUDA device.
# Environment: PYTHON (default python3); GPU_SH_DEVICE=cpu for a dry run without a GPU (no CUDA check,
# benchmark on the CPU); GPU_SH_SITE (default /tmp/attrfx-gpu-site), where the wheels are installed;
# GPU_SH_BENCH_ARGS, more options for benchmarks.run (e.g. "--models mlp" for a short dry run).

set -u

PY=${PYTHON:-python3}
DEVICE=${GPU_SH_DEVICE:-cuda}
SITE=${GPU_SH_SITE:-/tmp/attrfx-gpu-site}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mkdir -p "${1:-gpu-results}" || exit 1
OUT=$(cd "${1:-gpu-results}" && pwd)
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
: >"$OUT/summary.txt"
FAILED=0

# step NAME LIMIT_S COMMAND...: run COMMAND under a time limit, its output in $OUT/NAME.log; record the outcome.
step() {
    local name=$1 limit=$2 rc=0 start=$SECONDS outcome
    shift 2
    if declare -F "$1" >/dev/null; then set -- bash -c "$1"; fi     # a function below: run it in a child bash
    echo "== $name (limit ${limit}s)"
    timeout -k 10 "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    case $rc in
        0) outcome=ok ;;
        124 | 137) outcome="TIMED OUT after ${limit}s" ;;
        *) outcome="FAILED (exit $rc)" ;;
    esac
    [ "$rc" -eq 0 ] || FAILED=$((FAILED + 1))
    tail -n 15 "$OUT/$name.log" | sed 's/^/   /'
    printf '%-12s %5ss  %s\n' "$name" "$((SECONDS - start))" "$outcome" | tee -a "$OUT/summary.txt"
}

# The test packages: captum 0.9.0 from .whl/ (offline, into $SITE), else what is missing, from pip.
install() {
    if ls .whl/*.whl >/dev/null 2>&1; then
        rm -rf "$SITE" && mkdir -p "$SITE"
        "$PY" -m pip install --no-index --no-deps --target "$SITE" .whl/*.whl ||
            for wheel in .whl/*.whl; do "$PY" -m zipfile -e "$wheel" "$SITE" || return 1; done  # a wheel is a zip
        return 0
    fi
    local missing
    missing=$("$PY" - <<'EOF'
import importlib.util
need = {"pytest": "pytest", "hypothesis": "hypothesis", "tqdm": "tqdm", "numpy": "numpy",
        "packaging": "packaging", "matplotlib": "matplotlib"}
print(" ".join(pkg for module, pkg in need.items() if importlib.util.find_spec(module) is None))
EOF
    ) || return 1
    local pin
    pin=$("$PY" -c 'import torch; print("torch==" + torch.__version__)') || return 1
    if [ -n "$missing" ]; then     # (one word per package)
        # shellcheck disable=SC2086
        "$PY" -m pip install --constraint <(echo "$pin") $missing || return 1
    fi
    "$PY" -c 'import captum, sys; sys.exit(captum.__version__ != "0.9.0")' 2>/dev/null ||
        "$PY" -m pip install --no-deps captum==0.9.0
}

versions() {
    "$PY" - <<'EOF'
import platform, sys, warnings
import torch
warnings.simplefilter("ignore")
print("python", platform.python_version(), sys.executable)
print("torch", torch.__version__, "| CUDA build", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "| devices", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB")
print("tf32: matmul", torch.backends.cuda.matmul.allow_tf32, "| cudnn", torch.backends.cudnn.allow_tf32)
EOF
}

imports() {
    "$PY" -c 'import attrfx, captum, hypothesis, pytest, tqdm
print("attrfx from", attrfx.__file__); print("captum", captum.__version__, "from", captum.__file__)
print("hypothesis", hypothesis.__version__, "| pytest", pytest.__version__)
import sys; sys.exit(captum.__version__ != "0.9.0")'
}

export PY SITE
export -f install versions imports

if command -v nvidia-smi >/dev/null 2>&1; then
    step nvidia-smi 15 nvidia-smi
else
    echo "nvidia-smi: not on PATH (skipped)" | tee -a "$OUT/summary.txt"
fi
step versions 45 versions
if [ "$DEVICE" = cuda ] && ! grep -q '^cuda available True' "$OUT/versions.log"; then
    msg="gpu.sh: no CUDA device: torch.cuda.is_available() did not say True (see $OUT/versions.log)."
    msg="$msg Run it on a machine with an NVIDIA GPU and a CUDA build of torch, or set GPU_SH_DEVICE=cpu for a dry run."
    echo "$msg" | tee -a "$OUT/summary.txt" >&2
    exit 2
fi
step install 45 install
if [ -d "$SITE" ] && ls .whl/*.whl >/dev/null 2>&1; then
    export PYTHONPATH="$SITE:$PYTHONPATH"
fi
step imports 30 imports
# Only the modules that carry the marker are collected: the others may import optional packages (nbclient, ...).
mapfile -t DEVICE_TESTS < <(grep -l 'pytest.mark.device' tests/test_*.py)
step pytest 120 "$PY" -m pytest -m device -q -rfE --junitxml="$OUT/pytest-device.xml" "${DEVICE_TESTS[@]}"
# shellcheck disable=SC2086  # GPU_SH_BENCH_ARGS: extra options, split into words (e.g. "--models mlp")
step benchmark 220 "$PY" -m benchmarks.run --device "$DEVICE" --quick --out "$OUT" ${GPU_SH_BENCH_ARGS:-}

echo "== summary ($OUT)"
cat "$OUT/summary.txt"
[ "$FAILED" -eq 0 ]
