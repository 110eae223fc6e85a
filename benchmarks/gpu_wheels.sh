#!/usr/bin/env bash
# Download, on a machine that reaches PyPI, the wheels benchmarks/gpu_suite.py needs on the GPU machine.
#
#     bash benchmarks/gpu_wheels.sh            # -> .whl/ (ignored by git; carried to the GPU machine)
#
# The GPU machine has Python 3.12 (x86_64, manylinux) with torch, torchvision, triton, numpy, safetensors,
# huggingface_hub, transformers, pillow, einops, requests, regex, filelock, zipp, opencv and pytest, and no
# internet. What our imports need beyond that (checked against pyproject.toml and the imports in
# live_upscale/): pydantic (the node's parameters) with its compiled core, spandrel (realesrgan), diffusers
# (stream_diffvsr) and their pure-Python needs. Never av: the suite touches no video files.
# The suite installs these with `pip install --no-index --no-deps --target <tmp site>` and puts that folder
# on PYTHONPATH, only when one of pydantic, spandrel or diffusers cannot be imported there.
# Versions are the ones the test suite runs with; one version of each (two would stop the install).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEST=${1:-.whl}
PKGS=(
  pydantic==2.14.4
  pydantic-core==2.50.5       # compiled: the only cp312 manylinux wheel here
  annotated-types==0.8.0
  typing-inspection==0.4.5
  typing-extensions==4.16.0   # pydantic 2.14 needs >= 4.16
  spandrel==0.4.2
  diffusers==0.42.1           # needs huggingface-hub >= 1.32 and safetensors >= 0.8: both on the GPU machine
  importlib-metadata==10.2.0  # diffusers' import; zipp is there
  lazy-importer==0.1.0        # importlib-metadata's
)
mkdir -p "$DEST"
rm -f "$DEST"/*.whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PKGS[@]}"
ls -l "$DEST"/*.whl
n=$(ls "$DEST"/*.whl | wc -l)
if [ "$n" -ne "${#PKGS[@]}" ]; then
  echo "gpu_wheels: expected ${#PKGS[@]} wheels in $DEST, found $n" >&2
  exit 1
fi
echo "wheels: $(du -sh "$DEST" | cut -f1); what travels (tracked + untracked-not-ignored + $DEST):" \
  "$( (git ls-files -z --cached --others --exclude-standard; find "$DEST" -type f -print0) | du -ch --files0-from=- | tail -1 | cut -f1)"
