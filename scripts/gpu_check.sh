#!/usr/bin/env bash
# One command that gives the whole picture of this project on a GPU machine, within 8 minutes
# on one H100 whatever fails along the way (every step has a time box, all of them a deadline):
#
#   1. installs the project and what the machine lacks from gpu_bundle/wheels, offline, into a
#      folder of its own (never touching the installed torch); without the bundle it uses what
#      is installed (see "With internet" below);
#   2. prints the GPU (nvidia-smi, torch.cuda.get_device_name);
#   3. runs the CUDA tests: python -m pytest -m cuda tests;
#   4. runs scripts/bench.py --device cuda (conventional loop vs project vs compute floor, batch
#      64 and 256) on gpu_bundle/data;
#   5. times `train -m experiment=study seed=0` (8 runs x 15 epochs) with the basic launcher,
#   6. and with hydra/launcher=joblib hydra.launcher.n_jobs=4;
#
# and writes every figure to results.txt in $OUT (when set; else outputs/gpu_check/<time>/),
# with each step's log beside it, and prints it at the end.
#
# The lent GPU machine (offline; python3 3.12 with torch, torchvision, tensorboard, matplotlib,
# tqdm, pytest, joblib): first `bash scripts/gpu_bundle.sh` here, then through the device tool,
#
#   run(command="bash scripts/gpu_check.sh", carry=["gpu_bundle/wheels", "gpu_bundle/data"], timeout_s=540)
#
# With internet, on any GPU machine: `pip install '.[cluster]' pytest`, then
# `bash scripts/gpu_check.sh` (no gpu_bundle/: it uses the installed package, and the data from
# data.root's usual places, downloading it once if need be).
#
# Settings (environment):
#   PYTHON             the interpreter (default: python3)
#   GPU_CHECK_BUDGET   seconds the whole check may take (default: 480)
#   GPU_CHECK_QUICK=1  a rehearsal, e.g. on a CPU machine: small bench measurements, and the study
#                      for 1 epoch on 5,000 training images; its figures say nothing about speed
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
repo=$PWD
python=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET:-480}
quick=${GPU_CHECK_QUICK:-0}
deadline=$((SECONDS + budget))
out=${OUT:-outputs/gpu_check/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out" && out=$(cd "$out" && pwd)
results=$out/results.txt
work=$(mktemp -d /tmp/gpu_check.XXXXXX)
trap 'rm -rf "$work"' EXIT
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLCONFIGDIR=$work/matplotlib

wheels=$repo/gpu_bundle/wheels
data=$repo/gpu_bundle/data
data_override=()
[[ -d $data ]] && data_override=("data.root=$data")
# 6,400 images per measurement: the conventional loop's (CPU-bound) passes fit the time box; one
# round, 2 project epochs: every variant is a process of its own, which imports torch first.
bench_args=(--images 6400 --rounds 1 --project-epochs 2)
study_args=()
if [[ $quick == 1 ]]; then
    bench_args=(--images 1024 --rounds 1 --project-epochs 1 --val-size 55000)
    study_args=(epochs=1 data.val_size=55000)
fi

say() { echo "$*" >>"$results"; }

# step NAME BOX LOG COMMAND...: run COMMAND with its output in LOG, for at most BOX seconds and
# never past the deadline; record how it ended. Returns the command's exit status.
step() {
    local name=$1 box=$2 log=$3
    shift 3
    local left=$((deadline - SECONDS - 15)) # 15 s: timeout's grace before SIGKILL, and the summary
    ((box > left)) && box=$left
    if ((box < 5)); then
        say "" && say "## $name: not run, the check's $budget s are used up"
        return 124
    fi
    local started=$EPOCHREALTIME code
    timeout --kill-after=10 "$box" "$@" >"$log" 2>&1 </dev/null
    code=$?
    local took
    took=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    local how="exit $code"
    ((code == 0)) && how="ok"
    ((code == 124)) && how="TIMED OUT (time box ${box} s)"
    ((code == 137)) && how="KILLED after its time box (${box} s)"
    say "" && say "## $name: $how, ${took} s (wall)"
    return "$code"
}

{
    echo "# gpu_check results, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    ((quick)) && echo "QUICK REHEARSAL (GPU_CHECK_QUICK=1): bench and study figures are not comparable to a full check"
    echo "host: $(uname -srm), $(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc) cores; $("$python" --version 2>&1) at $(command -v "$python")"
    echo "checkout: $(git -C "$repo" log -1 --format='%h %s' 2>/dev/null || echo 'not a git checkout')"
    echo "budget: $budget s"
} >"$results"

# 1. Install. --target: a folder of its own, first on PYTHONPATH; --no-deps: pip resolves nothing,
# so it never considers torch. The project is built from this checkout by hatchling, which pip
# takes from the bundle too. Runtime dependencies of the bundle's packages that this machine
# lacks (the GPU machine has them all) come from the bundle as well.
if [[ -d $wheels ]]; then
    site=$work/site
    packages=(antlr4-python3-runtime omegaconf hydra-core hydra-joblib-launcher hydra-submitit-launcher submitit)
    for pair in PyYAML:yaml packaging:packaging joblib:joblib cloudpickle:cloudpickle typing_extensions:typing_extensions; do
        "$python" -c "import ${pair##*:}" 2>/dev/null || packages+=("${pair%%:*}")
    done
    # Only the bundle: no index, and none of this machine's own pip settings.
    step "Install from gpu_bundle/wheels, offline: ${packages[*]} and the project" 60 "$out/install.log" \
        env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CONSTRAINT PIP_CONFIG_FILE=/dev/null \
        "$python" -m pip install --no-index --find-links "$wheels" --no-deps --no-compile --target "$site" \
        "${packages[@]}" "$repo"
    grep -E "^Successfully installed" "$out/install.log" >>"$results"
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
else
    say "" && say "## Install: no gpu_bundle/wheels; the installed packages are used"
fi
# Everything a training run and the command line import (the package's __init__ is empty: importing
# it alone would prove nothing).
"$python" -c "import hydra, lenet_fmnist.cli, lenet_fmnist.training.trainer, lenet_fmnist.inference.evaluate; \
print('hydra', hydra.__version__, '| lenet_fmnist from', lenet_fmnist.__file__)" \
    >>"$results" 2>&1 || say "lenet_fmnist's training side or hydra cannot be imported: the steps below fail (see install.log)"

# 2. The GPU.
say "" && say "## GPU"
if command -v nvidia-smi >/dev/null; then
    timeout 15 nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$results" 2>&1
else
    say "nvidia-smi: not found"
fi
timeout 60 "$python" - >>"$results" 2>&1 <<'EOF'
import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        print(f"cuda:{index}: {torch.cuda.get_device_name(index)}, sm_{props.major}{props.minor}, "
              f"{props.multi_processor_count} SMs, {props.total_memory / 2**30:.1f} GiB")
else:
    print("CUDA is absent here: torch.cuda.is_available() is false (the cuda tests skip; bench and study run on the CPU)")
EOF
device=cpu
"$python" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && device=cuda

# 3. The CUDA tests, one line each as it ends (so a cut-off run still shows which passed), the
# reasons of failures and skips, and where the time went. About 20 subprocesses, each of which
# initialises CUDA (5-10 s apiece).
step "CUDA tests: pytest -m cuda tests" 200 "$out/tests.log" \
    "$python" -m pytest -m cuda tests -v -p no:cacheprovider -o addopts="--strict-markers -rfEs" \
    --durations=0 --durations-min=1
grep -E "::.* (PASSED|FAILED|ERROR|SKIPPED)|^(FAILED|ERROR|SKIPPED) |^[0-9.]+s (setup|call|teardown) |[0-9]+ (passed|failed|skipped|deselected|error)" \
    "$out/tests.log" >>"$results" || tail -n 3 "$out/tests.log" >>"$results" # nothing: pytest did not get that far

# 4. The benchmark.
step "Bench: scripts/bench.py --device $device ${bench_args[*]}" 75 "$out/bench.log" \
    "$python" scripts/bench.py --device "$device" "${bench_args[@]}" --out "$out/bench.json" \
    ${data_override:+--data-root "$data"}
grep -vE "^\s*$|^Wrote " "$out/bench.log" | grep -E "^\||^batch|^LeNet|rror" >>"$results"

# 5, 6. The study's 8 configurations for seed 0. A run cut off by its time box still leaves its
# finished runs' metrics.json, summarised below.
summarise() { # a sweep directory -> its runs' figures
    "$python" - "$1" >>"$results" 2>&1 <<'EOF'
import json
import sys
from pathlib import Path

runs = sorted(Path(sys.argv[1]).glob("*/metrics.json"))
done = [json.loads(p.read_text()) | {"name": p.parent.name} for p in runs]
completed = [m for m in done if m["status"] == "completed"]
epochs = sum(m["epochs_completed"] for m in done)
train = sum(m["train_seconds"] for m in done)
print(f"runs completed: {len(completed)} of 8 ({len(done)} started); epochs trained: {epochs}; "
      f"training time summed over runs: {train:.1f} s ({train / max(epochs, 1):.2f} s an epoch)")
for m in done:
    device = m.get("device")
    print(f"  {m['name']}: {m['status']} on {device}, {m['epochs_completed']} epochs, {m['train_seconds']:.1f} s training, "
          f"test acc {m['test_acc'] if m['test_acc'] is None else round(m['test_acc'], 4)}")
EOF
}
study() { # LABEL DIR BOX [OVERRIDES...]
    local label=$1 dir=$2 box=$3
    shift 3
    step "Study, $label: train -m experiment=study seed=0${*:+ $*}" "$box" "$out/study_${dir##*/}.log" \
        "$python" -m lenet_fmnist train -m experiment=study seed=0 "${data_override[@]}" "${study_args[@]}" \
        "hydra.sweep.dir=$dir" "$@"
    summarise "$dir"
}
# The basic launcher gets what time is left but 90 s (at least 60 s, at most 120 s); joblib the rest.
left=$((deadline - SECONDS - 15 - 90))
study "basic launcher" "$work/basic" $((left < 60 ? 60 : left > 120 ? 120 : left))
study "joblib, 4 jobs" "$work/joblib" 90 hydra/launcher=joblib hydra.launcher.n_jobs=4

say "" && say "Total: $SECONDS s. Logs beside this file: $out"
cat "$results"
