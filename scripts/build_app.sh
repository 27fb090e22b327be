#!/usr/bin/env bash
# Build the standalone app (a PyInstaller one-folder bundle in dist/loev/) WITHOUT torch.
#
# The bundle is built from its own virtual environment, .venv-bundle (override with
# BUNDLE_VENV), holding scripts/bundle-requirements.txt: the app's pinned dependencies
# minus torch/torchaudio, plus onnxruntime and PyInstaller. The model runs from
# resources/loev-default.onnx (re-export it with `loev-train export
# resources/loev-default.safetensors` after changing the checkpoint). Ends by running the
# bundle's smoke test (opens the window offscreen, embeds a signal, exits 0).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${BUNDLE_VENV:-.venv-bundle}

# Same inputs, same bundle: fixed hash seed and timestamps, no native-CPU hnswlib build.
export PYTHONHASHSEED=0 HNSWLIB_NO_NATIVE=1
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 315532800)
export SOURCE_DATE_EPOCH

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
"$VENV/bin/python" -m pip install -q -r scripts/bundle-requirements.txt
if "$VENV/bin/python" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
  echo "build_app: torch is installed in $VENV; the bundle is built without it" >&2
  exit 1
fi
[ -f resources/loev-default.onnx ] || {
  echo "build_app: resources/loev-default.onnx is missing: run loev-train export resources/loev-default.safetensors" >&2
  exit 1
}

rm -rf build/loev dist/loev
"$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN loev.spec

echo "build_app: smoke test" >&2
QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen} dist/loev/loev --smoke-test
echo "build_app: dist/loev is $(du -sm dist/loev | cut -f1) MB" >&2
