"""Compact optimizer state for fixed-mask fine-tuning: memory and step time.

  python benchmarks/bench_compact.py [--rounds 30] [--window 10] [--calls 10]

For LeNet-300-100 and an MLP 784-1024-1024-10 (batch 128, Adam 1e-3) at
50%, 90% and 99% sparsity (magnitude, uniform per layer), in one run:

1. optimizer-state bytes (sum of the state's leaf nbytes) of dense Adam,
   of `sparsify(adam, fixed mask)` (dense moments plus the bool masks) and
   of `compact_masked(adam, masks)` (moments of the kept weights plus their
   int32 indices, which are counted), each over dense Adam's;
2. the jitted train step (forward, backward, update, apply; params and
   state donated) of `compact_masked` over the dense-state masked step
   (`sparsify` with a fixed mask), dense Adam beside for reference; all
   variants of a model alternate window by window, the starting one
   rotating, medians over `--rounds` windows of `--window` steps (the
   verdict is the ratio of the medians); 'paired' is the median over rounds
   of the ratio of the two windows of a round, 'best / best' the ratio of
   the fastest windows (the least disturbed by other load), 'CPU time' the
   ratio of the medians of this process's CPU seconds per step (work done,
   whatever share of the CPUs the process got; threads waiting count too);
3. the optimizer update alone (jitted `tx.update` on given gradients, no
   forward or backward), and `compact_masked(optax.identity())`, which is
   the gather of the kept gradients and the scatter of the updates with no
   optimizer work: the price of the layout (interleaved blocks of `--calls`
   calls, median over `--rounds` blocks).

Targets (issue 14, item 3) at 90%: state <= 0.35x dense Adam's, step <=
1.2x the dense-state masked step. Only ratios measured in one run mean
anything.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparsejax as sj  # noqa: E402
from sparsejax import models  # noqa: E402
from sparsejax.core import compact  # noqa: E402

SPARSITIES = (0.5, 0.9, 0.99)
TARGET_SPARSITY = 0.9
STATE_TARGET = 0.35
STEP_TARGET = 1.2
LR = 1e-3


class Runner:
  """One variant: its own donated params and state, and its jitted step."""

  def __init__(self, loss, params, tx, masks=None):
    self.tx = tx
    self.params = jax.tree.map(jnp.copy, params if masks is None
                               else sj.apply_masks(params, masks))
    self.state = tx.init(self.params)
    self.state_bytes = compact.nbytes(self.state)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s, x, y):
      g = jax.grad(loss)(p, x, y)
      u, s = tx.update(g, s, p)
      return optax.apply_updates(p, u), s
    self.step = step

  def window(self, x, y, n) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) per step over n steps."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
      self.params, self.state = self.step(self.params, self.state, x, y)
    jax.block_until_ready(self.params)
    return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n


def blocked(fn, args, n) -> float:
  """Median seconds of one blocked call over n calls."""
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def update_alone(params, grads, masks, rounds, calls):
  """{variant: ms} of one jitted tx.update on given gradients: blocks of
  `calls` calls, the variants round-robin, median over `rounds` blocks."""
  p = sj.apply_masks(params, masks)
  fns = {}
  for name, tx in (('sparsify', sj.sparsify(optax.adam(LR), sj.make_schedule('fixed',
                                                                            masks=masks))),
                   ('compact', compact.compact_masked(optax.adam(LR), masks)),
                   ('compact, identity inner', compact.compact_masked(optax.identity(),
                                                                      masks))):
    fn, args = jax.jit(lambda g, s, p, tx=tx: tx.update(g, s, p)), (grads, tx.init(p), p)
    jax.block_until_ready(fn(*args))
    fns[name] = (fn, args)
  out = {k: [] for k in fns}
  for _ in range(rounds):
    for name, (fn, args) in fns.items():
      out[name].append(blocked(fn, args, calls))
  return {k: statistics.median(v) * 1e3 for k, v in out.items()}


def bench_model(model, rounds, window, calls):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((128, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, 128))
  params = models.init_variables(model, jax.random.key(0), (28, 28, 1))['params']

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, x), y).mean()

  masks = {s: sj.prune(params, s)[1] for s in SPARSITIES}
  runners = {'dense adam': Runner(loss, params, optax.adam(LR))}
  for s in SPARSITIES:
    runners[f'sparsify {s:.0%}'] = Runner(
        loss, params, sj.sparsify(optax.adam(LR), sj.make_schedule('fixed', masks=masks[s])),
        masks[s])
    runners[f'compact {s:.0%}'] = Runner(
        loss, params, compact.compact_masked(optax.adam(LR), masks[s]), masks[s])
  for r in runners.values():      # compile, settle allocations
    r.window(x, y, 2)
    r.window(x, y, window)
  names = list(runners)
  times = {k: [] for k in names}
  cpu = {k: [] for k in names}
  for i in range(rounds):
    for name in names[i % len(names):] + names[:i % len(names)]:
      wall, c = runners[name].window(x, y, window)
      times[name].append(wall)
      cpu[name].append(c)
  med = {k: statistics.median(v) for k, v in times.items()}
  cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
  grads = jax.jit(jax.grad(loss))(params, x, y)
  rows = []
  dense_bytes = runners['dense adam'].state_bytes
  for s in SPARSITIES:
    sp, co = runners[f'sparsify {s:.0%}'], runners[f'compact {s:.0%}']
    idx_bytes = compact.nbytes(co.state.indices)
    tc, ts = times[f'compact {s:.0%}'], times[f'sparsify {s:.0%}']
    paired = statistics.median(a / b for a, b in zip(tc, ts))
    rows.append(dict(
        sparsity=s, dense_bytes=dense_bytes, sparsify_bytes=sp.state_bytes,
        compact_bytes=co.state_bytes, idx_bytes=idx_bytes,
        dense_ms=med['dense adam'] * 1e3, sparsify_ms=med[f'sparsify {s:.0%}'] * 1e3,
        compact_ms=med[f'compact {s:.0%}'] * 1e3,
        ratio=med[f'compact {s:.0%}'] / med[f'sparsify {s:.0%}'], paired=paired,
        best=min(tc) / min(ts),
        cpu=cpu_med[f'compact {s:.0%}'] / cpu_med[f'sparsify {s:.0%}'], update=update_alone(params, grads, masks[s], rounds, calls)))
  n = sum(p.size for p in jax.tree.leaves(params))
  return rows, n


def verdict(value, target, applies):
  if not applies:
    return '-'
  return 'PASS' if value <= target else 'MISS'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rounds', type=int, default=30, help='windows per variant')
  parser.add_argument('--window', type=int, default=10, help='steps per timed window')
  parser.add_argument('--calls', type=int, default=10,
                      help='calls per block of the update-alone timing')
  args = parser.parse_args(argv)
  print(f'sparsejax compact-state benchmark; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}; '
        f'batch 128, adam({LR}); load {os.getloadavg()[0]:.2f}')
  t0 = time.perf_counter()
  for label, model in (('LeNet-300-100', models.get_model('lenet300_100')),
                       ('MLP 784-1024-1024-10', models.get_model(
                           'mlp', features=(1024, 1024), num_classes=10))):
    rows, n = bench_model(model, args.rounds, args.window, args.calls)
    print(f'\n{label} ({n:,} params), step: medians of {args.rounds} interleaved windows '
          f'of {args.window} steps')
    print('| sparsity | dense Adam state | sparsify state | compact state (indices) '
          '| sparsify / dense | compact / dense | target | result |')
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
      c = r['compact_bytes'] / r['dense_bytes']
      on = r['sparsity'] == TARGET_SPARSITY
      print(f"| {r['sparsity']:.0%} | {r['dense_bytes'] / 2**20:.2f} MiB "
            f"| {r['sparsify_bytes'] / 2**20:.2f} MiB "
            f"| {r['compact_bytes'] / 2**20:.2f} MiB ({r['idx_bytes'] / 2**20:.2f}) "
            f"| {r['sparsify_bytes'] / r['dense_bytes']:.3f}x | {c:.3f}x "
            f"| {'<=%.2fx' % STATE_TARGET if on else '-'} | {verdict(c, STATE_TARGET, on)} |")
    print('| sparsity | dense Adam ms/step | sparsify ms/step | compact ms/step '
          '| compact / sparsify | paired | best / best | CPU time | target | result |')
    print('|---|---|---|---|---|---|---|---|---|---|')
    for r in rows:
      on = r['sparsity'] == TARGET_SPARSITY
      print(f"| {r['sparsity']:.0%} | {r['dense_ms']:.3f} | {r['sparsify_ms']:.3f} "
            f"| {r['compact_ms']:.3f} | {r['ratio']:.3f}x | {r['paired']:.3f}x "
            f"| {r['best']:.3f}x | {r['cpu']:.3f}x "
            f"| {'<=%.1fx' % STEP_TARGET if on else '-'} "
            f"| {verdict(r['ratio'], STEP_TARGET, on)} |")
    print('| sparsity | update alone, ms: sparsify | compact | compact, identity inner '
          '(gather + scatter) | compact / sparsify |')
    print('|---|---|---|---|---|')
    for r in rows:
      u = r['update']
      print(f"| {r['sparsity']:.0%} | {u['sparsify']:.3f} | {u['compact']:.3f} "
            f"| {u['compact, identity inner']:.3f} | {u['compact'] / u['sparsify']:.3f}x |")
    sys.stdout.flush()
  print('\nstate: sum of the leaf nbytes of tx.init(params); compact counts its int32 indices.')
  print(f'load at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - t0:.0f} s in all')
  return 0


if __name__ == '__main__':
  sys.exit(main())
