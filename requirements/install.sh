#!/usr/bin/env bash
# Creates .venv with LegSegNetLib and the `legsegnet` command. `--test` adds the test-only tools
# (pytest, slicer-core, slicerio, the nnunetv2 reference). torch is pinned by constraints.txt so no
# install step swaps in a multi-gigabyte CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".${extras}"
# Its declared dependencies (timm, a newer torch) are not needed for the U-Nets nnU-Net plans describe.
.venv/bin/python -m pip install --quiet --no-deps -c requirements/constraints.txt dynamic-network-architectures==0.4.4
