"""Stacked mask updates: compile and run time of one RigL / SET update with
same-shaped leaves as one `lax.map` (`core.stacked`) against a loop over the
leaves, in one run.

  python benchmarks/bench_stacked.py [--rounds 5] [--layers 4,8]

Cases: the causal Transformer LM of `bench_update.py` (d_model 256, mlp 1024)
at each depth in `--layers` (its blocks' matrices share shapes: stacking
applies), and the MLP 784-1024-1024-10 (every kernel has its own shape: the
two are the same program, so its ratio shows the timing noise). For each
case and schedule each variant is traced and compiled once from cleared
caches (`jax.jit(...).lower(...).compile()`, timed), then timed in windows
of `--calls` calls that alternate between the variants, `--rounds` windows
each (median of medians). Prints the ratios stacked / loop, XLA's scratch
bytes of each program (`memory_analysis().temp_size_in_bytes`) and whether
the masks are bitwise the same. Only ratios from one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'benchmarks'))

import bench_update  # noqa: E402
import sparsejax as sj  # noqa: E402
from sparsejax.core import stacked  # noqa: E402

LOOP = 10 ** 9      # MIN_GROUP that stacks nothing: the loop over leaves


def compile_update(sched, args, min_group):
  """(compile s, compiled update, scratch bytes): a fresh trace and compile."""
  stacked.MIN_GROUP = min_group
  jax.clear_caches()
  t0 = time.perf_counter()
  compiled = jax.jit(sched.update).lower(*args).compile()
  seconds = time.perf_counter() - t0
  stacked.MIN_GROUP = stacked.MIN_GROUP_DEFAULT
  return seconds, compiled, compiled.memory_analysis().temp_size_in_bytes


def bench_case(case, rounds, calls):
  grads = jax.grad(case.loss)(case.params, case.x, case.y)
  step = jnp.int32(bench_update.WINDOW)
  for name in ('rigl', 'set'):
    sched = sj.make_schedule(name, sparsity=bench_update.SPARSITY, every=bench_update.WINDOW,
                             end=100 * bench_update.WINDOW)
    masks, state = sched.init(case.params)
    params = sj.apply_masks(case.params, masks)
    args = (masks, params, grads, step, state)
    variants = {'loop': LOOP, 'stacked': stacked.MIN_GROUP_DEFAULT}
    built = {v: compile_update(sched, args, g) for v, g in variants.items()}
    outs = {v: jax.block_until_ready(b[1](*args))[0] for v, b in built.items()}
    same = all(bool(jnp.array_equal(a, b)) for a, b in zip(
        jax.tree.leaves(outs['loop']), jax.tree.leaves(outs['stacked'])))
    runs = {v: [] for v in variants}
    for _ in range(rounds):       # windows of `calls` calls, the variants alternating
      for v in variants:
        runs[v].append(bench_update.time_calls(built[v][1], args, calls))
    (lc, _, lm), (sc, _, sm) = built['loop'], built['stacked']
    lr, sr = statistics.median(runs['loop']), statistics.median(runs['stacked'])
    print(f'| {case.label} | {name} | {lc:.2f} | {sc:.2f} | {sc / lc:.2f}x | {lr * 1e3:.1f} | '
          f'{sr * 1e3:.1f} | {sr / lr:.3f}x | {lm / 2**20:.1f} | {sm / 2**20:.1f} | {same} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=5, help='timed windows per variant')
  parser.add_argument('--calls', type=int, default=20, help='calls per window (median)')
  parser.add_argument('--layers', default='4,8')
  parser.add_argument('--no-mlp', action='store_true')
  args = parser.parse_args(argv)
  print(f'sparsejax stacked-update benchmark; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, backend {jax.default_backend()}; {bench_update.SPARSITY:.0%} '
        f'sparse, {args.rounds} windows of {args.calls} calls; load {os.getloadavg()[0]:.2f}')
  print('| case | schedule | compile loop s | compile stacked s | ratio | run loop ms | '
        'run stacked ms | ratio | scratch loop MiB | scratch stacked MiB | same masks |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  cases = [bench_update.transformer_case(num_layers=int(n)) for n in args.layers.split(',')]
  if not args.no_mlp:
    cases.append(bench_update.mlp_case())
  for case in cases:
    bench_case(case, args.rounds, args.calls)
  print(f'load at end {os.getloadavg()[0]:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
