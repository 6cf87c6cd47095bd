#!/usr/bin/env bash
# The accelerator check of issue 13.5 (benchmarks/accelerator_check.py):
# step ratios (dense, fixed, gradual, RigL, SET) for an MLP, ResNet-20 and a
# Transformer LM in bf16, one RigL update at ~100M parameters and the README's
# MNIST-1D lottery, SmolLM2 perplexity and Wanda 2:4. Budget: at most 9 minutes on one GPU, enforced here with
# `timeout` (ACCEL_CHECK_TIMEOUT seconds; 540 full, 1800 with --quick).
#
#   bash benchmarks/accelerator_check.sh           # full sizes, one GPU
#   bash benchmarks/accelerator_check.sh --quick   # tiny sizes: smoke test on CPU
#
# Needs a jaxlib for the accelerator in PYTHON (default .venv/bin/python).
# Exit status: 0 when every section ran, 1 when one failed, 124 on timeout.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
limit=540
for arg in "$@"; do [ "$arg" = "--quick" ] && limit=1800; done
[ "${SPARSEJAX_CHECK_QUICK:-}" = "1" ] && limit=1800
limit="${ACCEL_CHECK_TIMEOUT:-$limit}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false   # the lottery runs in a second process
exec timeout --kill-after=15 "$limit" "$PY" -u benchmarks/accelerator_check.py "$@"
