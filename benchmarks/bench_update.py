"""Dynamic sparsity at the floor: the mask update as its own program.

  python benchmarks/bench_update.py [--rounds 10]

For LeNet-300-100 and an MLP 784-1024-1024-10 (batch 128, Adam, 90%), in one
run with dense beside:

1. the train step's time over dense for a fixed mask and for gradual, RigL
   and SET with a mask update every 100 steps, amortised (each timed window
   of 100 steps holds one update), with the update inside every step
   (`sparsify(update='in_step')`, a `lax.cond`) and as a separate program
   called on update steps only (`update='separate'`, what the training loop
   does); variants alternate window by window, medians over `--rounds`;
2. the XLA scratch memory (`memory_analysis().temp_size_in_bytes`) of each
   compiled program over the dense step's;
3. one mask update on its own (schedule update + moment reset, jitted), in
   ms and ms per million prunable weights, and where SET's time goes next to
   RigL's.

Only ratios measured in one run mean anything.
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
from sparsejax.core import criteria, dynamic, transform  # noqa: E402

WINDOW = 100        # steps per timed window = the mask-update period
SPARSITY = 0.9
BIG = 10 ** 9       # schedules never end within the benchmark


def schedules(params):
  fixed = sj.prune(params, SPARSITY)[1]
  return {
      'dense': None,
      'fixed 90%': (sj.make_schedule('fixed', masks=fixed), 'in_step'),
      **{f'{name} ({mode})': (sched, mode) for name, sched in (
          ('gradual', sj.make_schedule('gradual', sparsity=SPARSITY, start=0, end=BIG,
                                       every=WINDOW)),
          ('rigl', sj.make_schedule('rigl', sparsity=SPARSITY, end=BIG, every=WINDOW)),
          ('set', sj.make_schedule('set', sparsity=SPARSITY, end=BIG, every=WINDOW)))
         for mode in ('in_step', 'separate')},
  }


class Runner:
  """One variant: its own donated params and state, and its jitted step."""

  def __init__(self, loss, params, variant):
    self.schedule, self.mode = variant or (None, None)
    self.tx = (sj.sparsify(optax.adam(1e-3), self.schedule, update=self.mode)
               if variant else optax.adam(1e-3))
    self.params = jax.tree.map(jnp.copy, params)
    self.state = self.tx.init(self.params)
    if variant:
      self.params = sj.masked_params(self.params, self.state)
    self.count = 0

    @functools.partial(jax.jit, static_argnames='update_masks', donate_argnums=(0, 1))
    def step(p, s, x, y, update_masks=None):
      g = jax.grad(loss)(p, x, y)
      flag = {} if update_masks is None else {'update_masks': update_masks}
      u, s = self.tx.update(g, s, p, **flag)
      return optax.apply_updates(p, u), s
    self.step = step

  def flags(self, n):
    """update_masks per step of the next n (None: not passed)."""
    if self.mode != 'separate':
      return [None] * n
    return [self.schedule.updates_at(c) for c in range(self.count, self.count + n)]

  def window(self, x, y) -> float:
    flags = self.flags(WINDOW)
    t0 = time.perf_counter()
    for f in flags:
      self.params, self.state = self.step(self.params, self.state, x, y, update_masks=f)
    jax.block_until_ready(self.params)
    self.count += WINDOW
    return (time.perf_counter() - t0) / WINDOW

  def scratch(self, x, y, update_masks=None) -> int:
    compiled = self.step.lower(self.params, self.state, x, y,
                               update_masks=update_masks).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def time_calls(fn, args, n=30) -> float:
  """Median seconds of one blocked call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def update_costs(params, grads, scheds):
  """ms of one jitted mask update + Adam moment reset, per schedule, and the
  parts of SET's update (random draw, drop/grow) next to RigL's."""
  inner = optax.with_extra_args_support(optax.adam(1e-3))
  out = {}
  for name in ('gradual', 'rigl', 'set'):
    sched = scheds[f'{name} (separate)'][0]
    masks, st = sched.init(params)
    p = sj.apply_masks(params, masks)

    def change(masks, p, g, step, st, inner_state, sched=sched):
      new, st = sched.update(masks, p, g, step, st)
      changed = jax.tree.map(lambda a, b: a != b, masks, new)
      return new, st, transform.reset_moments(inner, inner_state, changed)
    out[name] = time_calls(jax.jit(change),
                           (masks, p, grads, jnp.int32(WINDOW), st, inner.init(p)))
  rigl, set_ = scheds['rigl (separate)'][0], scheds['set (separate)'][0]
  masks, _ = set_.init(params)
  p = sj.apply_masks(params, masks)
  out['set: random scores alone'] = time_calls(
      jax.jit(lambda p: criteria.random(p, None, set_.key(WINDOW))), (p,))
  # drop/grow of every prunable leaf with given grow scores (no draw)
  def drop_grow_all(masks, p, grow):
    return jax.tree.map(lambda m, w, s: None if m is None else dynamic.drop_grow(
        m, jnp.abs(w), s, set_.drop_fraction), masks, p, grow, is_leaf=lambda x: x is None)
  rand = criteria.random(p, None, set_.key(WINDOW))
  out['set: drop/grow alone, random scores'] = time_calls(jax.jit(drop_grow_all),
                                                          (masks, p, rand))
  out['set: drop/grow alone, |grad| scores'] = time_calls(
      jax.jit(drop_grow_all), (masks, p, jax.tree.map(jnp.abs, grads)))
  rmasks, _ = rigl.init(params)
  out['rigl: drop/grow alone, |grad| scores'] = time_calls(
      jax.jit(drop_grow_all), (rmasks, sj.apply_masks(params, rmasks),
                               jax.tree.map(jnp.abs, grads)))
  return out


def bench_model(label, model, rounds):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((128, 28, 28, 1), np.float32))
  y = jnp.asarray(rng.integers(0, 10, 128))
  params = models.init_variables(model, jax.random.key(0), (28, 28, 1))['params']

  def loss(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(
        model.apply({'params': p}, x), y).mean()

  scheds = schedules(params)
  runners = {name: Runner(loss, params, v) for name, v in scheds.items()}
  for r in runners.values():      # compile both programs, move past count 0
    r.window(x, y)
    r.window(x, y)
  times = {k: [] for k in runners}
  for _ in range(rounds):
    for name, r in runners.items():
      times[name].append(r.window(x, y))
  med = {k: statistics.median(v) for k, v in times.items()}
  dense_scratch = runners['dense'].scratch(x, y)
  rows = []
  for name, r in runners.items():
    plain = r.scratch(x, y, False if r.mode == 'separate' else None)
    upd = r.scratch(x, y, True) if r.mode == 'separate' else None
    rows.append((name, med[name] * 1e3, med[name] / med['dense'], plain / 2 ** 20,
                 plain / dense_scratch, None if upd is None else upd / 2 ** 20))
  n_prunable = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(
      sj.get_masks(runners['rigl (separate)'].state)))
  grads = jax.grad(loss)(params, x, y)
  costs = update_costs(params, grads, scheds)
  return rows, costs, n_prunable


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=10)
  args = parser.parse_args(argv)
  print(f'sparsejax update-program benchmark; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, backend {jax.default_backend()}; batch 128, adam, '
        f'{SPARSITY:.0%}, mask update every {WINDOW} steps; load {os.getloadavg()[0]:.2f}')
  t0 = time.perf_counter()
  for label, model in (('LeNet-300-100', models.get_model('lenet300_100')),
                       ('MLP 784-1024-1024-10', models.get_model(
                           'mlp', features=(1024, 1024), num_classes=10))):
    rows, costs, n = bench_model(label, model, args.rounds)
    print(f'\n{label} ({n:,} prunable weights), medians of {args.rounds} windows of '
          f'{WINDOW} steps')
    print('| variant | ms/step | vs dense | scratch of plain step MiB | vs dense '
          '| scratch of update program MiB |')
    print('|---|---|---|---|---|---|')
    for name, ms, ratio, mib, mratio, upd in rows:
      shown = '-' if upd is None else f'{upd:.2f}'
      print(f'| {name} | {ms:.3f} | {ratio:.3f}x | {mib:.2f} | {mratio:.2f}x | {shown} |')
    print('| one mask update (+ moment reset), jitted | ms | ms per million prunable |')
    print('|---|---|---|')
    for name, sec in costs.items():
      print(f'| {name} | {sec * 1e3:.3f} | {sec * 1e3 / (n / 1e6):.3f} |')
  print(f'\nload at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - t0:.0f} s in all')
  return 0


if __name__ == '__main__':
  sys.exit(main())
