#!/usr/bin/env bash
# The whole study on the real Fashion-MNIST data, in one command, then its report:
#
#   scripts/run_study.sh OUTPUT_DIR [--separate] [--factorial] [OVERRIDES...]
#
#   1. the five experiments (activation, pooling, optimizer, dropout, augmentation), 3 seeds each:
#      by default as the single sweep experiment=study (8 distinct configurations x 3 seeds = 24
#      runs), or with --separate as five sweeps (36 runs; the base configuration runs five times);
#   2. experiment=best, 5 seeds, after its teacher (experiment=best_wide_teachers, in the fixed place
#      where experiment=best reads it; kept if already trained): about 3.5 hours on 2 cores;
#   3. with --factorial, experiment=factorial (216 runs: hours);
#   4. python -m lenet_fmnist report OUTPUT_DIR  ->  OUTPUT_DIR/report.md, report.csv, *.png
#
# OVERRIDES go to every training command (e.g. `device=cpu threads=2`). Each sweep gets its own
# directory under OUTPUT_DIR. Running the script again with the same OUTPUT_DIR finishes what is
# missing: sweeps already started are resumed (completed runs are skipped), the rest start.
# Prints the wall time of each step and of the whole, and records the machine in machine.txt.
set -uo pipefail

usage="usage: scripts/run_study.sh OUTPUT_DIR [--separate] [--factorial] [OVERRIDES...]"
if [[ $# -lt 1 || $1 == -* ]]; then
    echo "$usage" >&2
    exit 2
fi
out=$1
shift
separate=0
factorial=0
overrides=()
for arg in "$@"; do
    case $arg in
        --separate) separate=1 ;;
        --factorial) factorial=1 ;;
        --*) echo "unknown option $arg; $usage" >&2; exit 2 ;;
        *) overrides+=("$arg") ;;
    esac
done
python=${PYTHON:-python}
mkdir -p "$out" || exit 1

clock() { # seconds -> h:mm:ss
    printf '%d:%02d:%02d' $(($1 / 3600)) $(($1 % 3600 / 60)) $(($1 % 60))
}

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "host: $(uname -srm)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//') ($(nproc) cores available)"
    "$python" -c 'import torch; print(f"torch: {torch.__version__}, cuda: {torch.cuda.is_available()}")'
    echo "overrides: ${overrides[*]:-none}"
} >"$out/machine.txt"

failed=0
study_start=$(date +%s)

sweep() { # experiment name, sweep directory
    local name=$1 dir=$2 resume=() start
    # A sweep already started (by an earlier, interrupted call) is finished, not refused.
    [[ -f $dir/multirun.yaml ]] && resume=(resume=true)
    start=$(date +%s)
    echo "== experiment=$name -> $dir"
    if ! "$python" -m lenet_fmnist train -m "experiment=$name" "hydra.sweep.dir=$dir" "${overrides[@]}" "${resume[@]}"; then
        echo "== experiment=$name: some runs did not complete (the report lists them)" >&2
        failed=1
    fi
    echo "== experiment=$name took $(clock $(($(date +%s) - start)))"
}

if ((separate)); then
    for name in activation pooling optimizer dropout augmentation; do
        sweep "$name" "$out/$name"
    done
else
    sweep study "$out/study"
fi
# The recipe's teacher goes where conf/experiment/best.yaml reads it, not under OUTPUT_DIR; once
# trained, `sweep` resumes it, which skips it.
sweep best_wide_teachers outputs/sweeps/best_wide_teachers
sweep best "$out/best"
((factorial)) && sweep factorial "$out/factorial"

echo "== report"
"$python" -m lenet_fmnist report "$out" || failed=1
total=$(($(date +%s) - study_start))
echo "wall time: $(clock "$total") ($total s)" | tee -a "$out/machine.txt"
exit "$failed"
