"""Stacked mask updates: compile and run time of one RigL / SET update with
same-shaped leaves as one `lax.map` (`core.stacked`) against a loop over the
leaves, in one run.

  python benchmarks/bench_stacked.py [--rounds 5] [--layers 4,8]

Cases: the causal Transformer LM of `bench_update.py` (d_model 256, mlp 1024)
at each depth in `--layers` (its blocks' matrices share shapes: stacking
applies), and the MLP 784-1024-1024-10 (every kernel has its own shape: the
two are the same program, a control). For each case and schedule, rounds
alternate the two variants; each round traces and compiles the update anew
(`jax.jit(...).lower(...).compile()`, JAX's caches cleared) and times 10
calls. Prints medians, the ratios stacked / loop, XLA's scratch bytes of each
program (`memory_analysis().temp_size_in_bytes`) and whether the masks are
bitwise the same. Only ratios from one run mean anything.
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


def one_round(sched, masks, params, grads, state, min_group):
  """(compile s, median call s, scratch bytes, new masks) of a fresh update program."""
  stacked.MIN_GROUP = min_group
  jax.clear_caches()
  step = jnp.int32(bench_update.WINDOW)
  t0 = time.perf_counter()
  compiled = jax.jit(sched.update).lower(masks, params, grads, step, state).compile()
  compile_s = time.perf_counter() - t0
  out = jax.block_until_ready(compiled(masks, params, grads, step, state))
  calls = []
  for _ in range(10):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(masks, params, grads, step, state))
    calls.append(time.perf_counter() - t0)
  return compile_s, statistics.median(calls), compiled.memory_analysis().temp_size_in_bytes, out[0]


def bench_case(case, rounds):
  grads = jax.grad(case.loss)(case.params, case.x, case.y)
  for name in ('rigl', 'set'):
    sched = sj.make_schedule(name, sparsity=bench_update.SPARSITY, every=bench_update.WINDOW,
                             end=100 * bench_update.WINDOW)
    masks, state = sched.init(case.params)
    params = sj.apply_masks(case.params, masks)
    res = {'loop': [], 'stacked': []}
    for _ in range(rounds):
      for variant, group in (('loop', LOOP), ('stacked', stacked.MIN_GROUP_DEFAULT)):
        res[variant].append(one_round(sched, masks, params, grads, state, group))
    stacked.MIN_GROUP = stacked.MIN_GROUP_DEFAULT
    same = all(bool(jnp.array_equal(a, b)) for a, b in zip(
        jax.tree.leaves(res['loop'][0][3]), jax.tree.leaves(res['stacked'][0][3])))
    med = {v: [statistics.median(r[i] for r in rs) for i in range(3)] for v, rs in res.items()}
    (lc, lr, lm), (sc, sr, sm) = med['loop'], med['stacked']
    print(f'| {case.label} | {name} | {lc:.2f} | {sc:.2f} | {sc / lc:.2f}x | {lr * 1e3:.1f} | '
          f'{sr * 1e3:.1f} | {sr / lr:.2f}x | {lm / 2**20:.1f} | {sm / 2**20:.1f} | {same} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--layers', default='4,8')
  parser.add_argument('--no-mlp', action='store_true')
  args = parser.parse_args(argv)
  print(f'sparsejax stacked-update benchmark; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, backend {jax.default_backend()}; {bench_update.SPARSITY:.0%} '
        f'sparse, medians of {args.rounds} rounds; load {os.getloadavg()[0]:.2f}')
  print('| case | schedule | compile loop s | compile stacked s | ratio | run loop ms | '
        'run stacked ms | ratio | scratch loop MiB | scratch stacked MiB | same masks |')
  print('|---|---|---|---|---|---|---|---|---|---|---|')
  cases = [bench_update.transformer_case(num_layers=int(n)) for n in args.layers.split(',')]
  if not args.no_mlp:
    cases.append(bench_update.mlp_case())
  for case in cases:
    bench_case(case, args.rounds)
  print(f'load at end {os.getloadavg()[0]:.2f}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
