#!/usr/bin/env bash
# Everything scripts/gpu_check.sh needs on an offline GPU machine, gathered here where PyPI answers:
#
#   scripts/gpu_bundle.sh [DATA_DIR]
#
#   gpu_bundle/wheels/  wheels for CPython 3.12 on manylinux x86_64 of what the project needs and
#                       the GPU machine lacks (hydra-core, omegaconf, antlr4-python3-runtime, the
#                       `cluster` extra's launchers and submitit) with their dependencies, and the
#                       build backend (hatchling and its dependencies), so that the project itself
#                       installs there from the checkout with `pip install --no-index`;
#   gpu_bundle/data/    the four Fashion-MNIST *-ubyte.gz files, from DATA_DIR (default: Debian's
#                       /usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`).
#
# Both folders are git-ignored (.gitignore), so the device tool sends them only when named in
# `carry`, at most 64 MiB with the working tree (this bundle: about 33 MiB). Then, through the
# device tool, from the repository root:
#
#   run(command="bash scripts/gpu_check.sh", carry=["gpu_bundle/wheels", "gpu_bundle/data"], timeout_s=540)
#
# The GPU machine already has torch, torchvision, tensorboard, matplotlib, tqdm, pytest, joblib,
# numpy, PyYAML and packaging (its package list); the project's dependencies on those are left to it.
set -euo pipefail
cd "$(dirname "$0")/.."

data_dir=${1:-/usr/share/datasets/fashion-mnist}
bundle=gpu_bundle
python=${PYTHON:-python3}
# The target: CPython 3.12, Linux x86_64 (the platform tags pip matches exactly, newest first).
target=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
export PIP_DISABLE_PIP_VERSION_CHECK=1

rm -rf "$bundle/wheels" "$bundle/data"
mkdir -p "$bundle/wheels" "$bundle/data"

for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
    if [[ ! -f $data_dir/$name.gz ]]; then
        echo "gpu_bundle.sh: $data_dir/$name.gz is missing: pass the directory of the four *-ubyte.gz files, or install Debian's dataset-fashion-mnist" >&2
        exit 1
    fi
    cp "$data_dir/$name.gz" "$bundle/data/"
done

# The requirements, read from pyproject.toml so that they follow it: the dependencies, the
# `cluster` extra and the build backend, less what the GPU machine has installed.
mapfile -t requirements < <("$python" - <<'EOF'
import re
import tomllib

PREINSTALLED = {"torch", "torchvision", "tensorboard", "matplotlib", "tqdm", "pytest", "joblib", "numpy"}
with open("pyproject.toml", "rb") as handle:
    project = tomllib.load(handle)
specs = (
    project["project"]["dependencies"]
    + project["project"]["optional-dependencies"]["cluster"]
    + project["build-system"]["requires"]
)
for spec in specs:
    name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower()
    if name not in PREINSTALLED:
        print(spec)
EOF
)

# hydra-core 1.3 and omegaconf 2.3 need antlr4-python3-runtime 4.9.*, which PyPI has as a source
# archive only: build its (pure Python, py3-none-any) wheel here.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$bundle/wheels" 'antlr4-python3-runtime==4.9.*'
# The rest with their dependencies, as wheels for the target; the antlr4 wheel above stands in
# for the source archive.
"$python" -m pip download --quiet "${target[@]}" --find-links "$bundle/wheels" --dest "$bundle/wheels" "${requirements[@]}"

echo "Requirements: ${requirements[*]}"
echo "Wheels:"
for wheel in "$bundle"/wheels/*; do echo "  ${wheel##*/}"; done
du -ch "$bundle/wheels" "$bundle/data"
size_kib=$(du -sk "$bundle" | cut -f1)
if ((size_kib > 60 * 1024)); then
    echo "gpu_bundle.sh: the bundle is $((size_kib / 1024)) MiB; with the working tree it must stay under the device tool's 64 MiB" >&2
    exit 1
fi
echo 'On the GPU machine: run(command="bash scripts/gpu_check.sh", carry=["gpu_bundle/wheels", "gpu_bundle/data"], timeout_s=540)'
