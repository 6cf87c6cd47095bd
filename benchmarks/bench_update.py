"""Dynamic sparsity at the floor: the mask update as its own program.

  python benchmarks/bench_update.py [--rounds 10] [--models lenet,mlp,transformer]
                                    [--modes in_step,separate] [--dtype float32]

For LeNet-300-100, an MLP 784-1024-1024-10 (batch 128), a causal Transformer
LM on random bytes (4 blocks, d_model 256, batch 4 x 64 tokens) and, on
request (`--models resnet20`), ResNet-20 (batch 128, 32x32x3), all with Adam
and 90% sparsity, in one run with dense beside:

1. the train step's time over dense for a fixed mask and for gradual, RigL
   and SET with a mask update every 100 steps, amortised (each timed window
   of 100 steps holds one update), with the update inside every step
   (`sparsify(update='in_step')`, a `lax.cond`) and as a separate program
   called on update steps only (`update='separate'`, what the training loop
   does); variants alternate window by window, medians over `--rounds`;
2. the XLA scratch memory (`memory_analysis().temp_size_in_bytes`) of each
   compiled program over the dense step's;
3. the train state's bytes per device (params, masks, optimizer state),
   summed over each array's addressable shards on each device so that it is
   right on a mesh too, over dense Adam's;
4. one mask update on its own (schedule update + moment reset, jitted), in
   ms and ms per million prunable weights, and where SET's time goes next to
   RigL's.

`--dtype bfloat16` computes the forward and backward pass in bf16 with
float32 params (the training loop's `train.compute_dtype` policy). ResNet-20
runs BatchNorm in training mode; its running statistics are not carried
between steps (a few per-channel vectors, not timed). Only ratios measured
in one run mean anything. `accelerator_check.py` reuses these functions.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import pathlib
import platform
import statistics
import sys
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sparsejax as sj  # noqa: E402
from sparsejax import models  # noqa: E402
from sparsejax.core import criteria, dynamic, transform  # noqa: E402
from sparsejax.train.task import cast_floats  # noqa: E402

WINDOW = 100        # steps per timed window = the mask-update period
SPARSITY = 0.9
BIG = 10 ** 9       # schedules never end within the benchmark
MODES = ('in_step', 'separate')


class Case(NamedTuple):
  """One model to benchmark: params, loss(params, x, y) and a batch."""
  label: str
  params: dict
  loss: Callable
  x: jax.Array
  y: jax.Array


def _loss(model, dtype, batch_stats=None):
  """Mean softmax cross-entropy, computed in `dtype` from float32 params (the
  loop's mixed-precision policy); BatchNorm models run in training mode."""
  def loss(p, x, y):
    if dtype != 'float32':
      p, x = cast_floats(p, dtype), cast_floats(x, dtype)
    if batch_stats is None:
      out = model.apply({'params': p}, x)
    else:
      out, _ = model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True,
                           mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(
        out.astype(jnp.float32), y).mean()
  return loss


def _classifier(label, model, shape, batch, dtype, seed=0) -> Case:
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.random((batch, *shape), np.float32))
  y = jnp.asarray(rng.integers(0, 10, batch))
  variables = models.init_variables(model, jax.random.key(seed), shape)
  return Case(f'{label}, batch {batch}, {dtype}', variables['params'],
              _loss(model, dtype, variables.get('batch_stats')), x, y)


def lenet_case(batch=128, dtype='float32') -> Case:
  return _classifier('LeNet-300-100', models.get_model('lenet300_100'), (28, 28, 1),
                     batch, dtype)


def mlp_case(features=(1024, 1024), batch=128, dtype='float32') -> Case:
  label = 'MLP ' + '-'.join(map(str, (784, *features, 10)))
  return _classifier(label, models.get_model('mlp', features=tuple(features), num_classes=10),
                     (28, 28, 1), batch, dtype)


def resnet_case(batch=128, width=16, blocks_per_stage=3, size=32, dtype='float32') -> Case:
  depth = 6 * blocks_per_stage + 2
  model = models.get_model('resnet20', width=width, blocks_per_stage=blocks_per_stage)
  return _classifier(f'ResNet-{depth} (width {width}, {size}x{size}x3)', model,
                     (size, size, 3), batch, dtype)


def transformer_case(d_model=256, num_layers=4, num_heads=4, mlp_dim=1024, seq=64, batch=4,
                     dtype='float32', seed=0) -> Case:
  """A causal byte-level LM (`transformer_decoder`) on random tokens; every
  rank-2 leaf is prunable (embeddings too)."""
  model = models.get_model('transformer_decoder', vocab_size=256, max_len=seq,
                           d_model=d_model, num_heads=num_heads, num_layers=num_layers,
                           mlp_dim=mlp_dim)
  rng = np.random.default_rng(seed)
  x = jnp.asarray(rng.integers(0, 256, (batch, seq)), jnp.int32)
  y = jnp.asarray(rng.integers(0, 256, (batch, seq)), jnp.int32)
  params = models.init_variables(model, jax.random.key(seed), (seq,), jnp.int32)['params']
  return Case(f'Transformer LM {num_layers}x{d_model} (mlp {mlp_dim}), batch {batch}x{seq} '
              f'tokens, {dtype}', params, _loss(model, dtype), x, y)


CASES = {'lenet': lenet_case, 'mlp': mlp_case, 'transformer': transformer_case,
         'resnet20': resnet_case}


def schedules(params, modes=MODES):
  fixed = sj.prune(params, SPARSITY)[1]
  return {
      'dense': None,
      'fixed 90%': (sj.make_schedule('fixed', masks=fixed), 'in_step'),
      **{f'{name} ({mode})': (sched, mode) for name, sched in (
          ('gradual', sj.make_schedule('gradual', sparsity=SPARSITY, start=0, end=BIG,
                                       every=WINDOW)),
          ('rigl', sj.make_schedule('rigl', sparsity=SPARSITY, end=BIG, every=WINDOW)),
          ('set', sj.make_schedule('set', sparsity=SPARSITY, end=BIG, every=WINDOW)))
         for mode in modes},
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

  def state_bytes(self) -> dict[str, int]:
    """{'params', 'masks', 'optimizer state', 'all'} in bytes on the device
    holding the most (masks are left out of the optimizer state)."""
    masks = [s.masks for s in transform.find_states(self.state)]
    parts = {'params': device_bytes(self.params), 'masks': device_bytes(masks)}
    parts['optimizer state'] = device_bytes(self.state) - parts['masks']
    total = parts['params'] + parts['masks'] + parts['optimizer state']
    top = max(total, key=total.get, default=None)
    return {**{k: v[top] for k, v in parts.items()}, 'all': 0 if top is None else total[top]}


def device_bytes(tree) -> collections.Counter:
  """Bytes of `tree`'s jax.Arrays per device, from their addressable shards
  (a replicated array counts in full on every device, a sharded one by its
  shard)."""
  out = collections.Counter()
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      for shard in leaf.addressable_shards:
        out[shard.device] += shard.data.nbytes
  return out


def time_calls(fn, args, n=30) -> float:
  """Median seconds of one blocked call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def update_time(sched, params, grads, n=30, inner=None) -> float:
  """Median seconds of one jitted mask update of `sched` (its update at step
  WINDOW) plus the reset of Adam's moments where the mask changed."""
  inner = inner or optax.with_extra_args_support(optax.adam(1e-3))
  masks, st = sched.init(params)
  p = sj.apply_masks(params, masks)

  def change(masks, p, g, step, st, inner_state):
    new, st = sched.update(masks, p, g, step, st)
    changed = jax.tree.map(lambda a, b: a != b, masks, new)
    return new, st, transform.reset_moments(inner, inner_state, changed)
  return time_calls(jax.jit(change), (masks, p, grads, jnp.int32(WINDOW), st, inner.init(p)),
                    n)


def update_costs(params, grads, scheds):
  """Seconds of one jitted mask update + Adam moment reset, per schedule, and
  the parts of SET's update (random draw, drop/grow) next to RigL's."""
  pick = lambda name: next(v[0] for k, v in scheds.items() if k.startswith(name + ' ('))
  out = {name: update_time(pick(name), params, grads) for name in ('gradual', 'rigl', 'set')}
  rigl, set_ = pick('rigl'), pick('set')
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


class Result(NamedTuple):
  rows: list          # (variant, ms/step, vs dense, scratch MiB, vs dense, update MiB)
  state: dict         # variant -> Runner.state_bytes()
  costs: dict         # update_costs(), {} when not asked for
  n_prunable: int
  rounds: int         # timed rounds actually run


def bench_model(case: Case, rounds, modes=MODES, costs=True, scratch=True,
                deadline=None) -> Result:
  """Times the variants of `case` window by window, `rounds` rounds (fewer,
  but at least 3, once time.perf_counter() passes `deadline`)."""
  x, y = case.x, case.y
  scheds = schedules(case.params, modes)
  runners = {name: Runner(case.loss, case.params, v) for name, v in scheds.items()}
  for r in runners.values():      # compile both programs, move past count 0
    r.window(x, y)
    r.window(x, y)
  times = {k: [] for k in runners}
  done = 0
  while done < rounds and not (deadline and done >= 3 and time.perf_counter() > deadline):
    for name, r in runners.items():
      times[name].append(r.window(x, y))
    done += 1
  med = {k: statistics.median(v) for k, v in times.items()}
  dense_scratch = runners['dense'].scratch(x, y) if scratch else None
  rows = []
  for name, r in runners.items():
    plain = upd = None
    if scratch:
      plain = r.scratch(x, y, False if r.mode == 'separate' else None) / 2 ** 20
      upd = r.scratch(x, y, True) / 2 ** 20 if r.mode == 'separate' else None
    rows.append((name, med[name] * 1e3, med[name] / med['dense'], plain,
                 None if plain is None else plain * 2 ** 20 / dense_scratch, upd))
  state = {name: r.state_bytes() for name, r in runners.items()}
  n_prunable = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(
      sj.get_masks(runners[f'rigl ({modes[0]})'].state)))
  found = {}
  if costs:
    grads = jax.grad(case.loss)(case.params, x, y)
    found = update_costs(case.params, grads, scheds)
  return Result(rows, state, found, n_prunable, done)


def _f(v, fmt):
  return '-' if v is None else format(v, fmt)


def print_result(case: Case, res: Result):
  print(f'\n{case.label} ({res.n_prunable:,} prunable weights), medians of {res.rounds} '
        f'windows of {WINDOW} steps')
  print('| variant | ms/step | vs dense | scratch of plain step MiB | vs dense '
        '| scratch of update program MiB |')
  print('|---|---|---|---|---|---|')
  for name, ms, ratio, mib, mratio, upd in res.rows:
    print(f'| {name} | {ms:.3f} | {ratio:.3f}x | {_f(mib, ".2f")} | {_f(mratio, ".2f")}x '
          f'| {_f(upd, ".2f")} |')
  dense = res.state['dense']['all']
  print('| train state per device | params MiB | masks MiB | optimizer state MiB '
        '| all MiB | vs dense Adam |')
  print('|---|---|---|---|---|---|')
  seen = set()
  for name, b in res.state.items():
    base = name.split(' (')[0]    # in_step and separate hold the same state
    if base in seen:
      continue
    seen.add(base)
    mib = {k: v / 2 ** 20 for k, v in b.items()}
    print(f"| {base} | {mib['params']:.2f} | {mib['masks']:.2f} "
          f"| {mib['optimizer state']:.2f} | {mib['all']:.2f} | {b['all'] / dense:.3f}x |")
  if res.costs:
    print('| one mask update (+ moment reset), jitted | ms | ms per million prunable |')
    print('|---|---|---|')
    for name, sec in res.costs.items():
      print(f'| {name} | {sec * 1e3:.3f} | {sec * 1e3 / (res.n_prunable / 1e6):.3f} |')


def print_costs(case: Case):
  """Section 4 alone: one mask update of each dynamic schedule."""
  grads = jax.grad(case.loss)(case.params, case.x, case.y)
  scheds = schedules(case.params, modes=('separate',))
  n = sum(int(np.prod(m.shape)) for m in jax.tree.leaves(
      scheds['rigl (separate)'][0].init(case.params)[0]))
  print(f'\n{case.label} ({n:,} prunable weights)')
  print('| one mask update (+ moment reset), jitted | ms | ms per million prunable |')
  print('|---|---|---|')
  for name, sec in update_costs(case.params, grads, scheds).items():
    print(f'| {name} | {sec * 1e3:.3f} | {sec * 1e3 / (n / 1e6):.3f} |')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--rounds', type=int, default=10)
  parser.add_argument('--models', default='lenet,mlp,transformer',
                      help=f'comma-separated, from {",".join(CASES)}')
  parser.add_argument('--modes', default=','.join(MODES), help='in_step, separate or both')
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--no-costs', action='store_true', help='skip the update timings (4.)')
  parser.add_argument('--costs-only', action='store_true',
                      help='only the update timings (4.), no train steps')
  args = parser.parse_args(argv)
  names, modes = args.models.split(','), tuple(args.modes.split(','))
  bad = [n for n in names if n not in CASES] + [m for m in modes if m not in MODES]
  if bad:
    parser.error(f'unknown model or mode: {bad}')
  print(f'sparsejax update-program benchmark; {platform.machine()}, {os.cpu_count()} CPUs, '
        f'jax {jax.__version__}, backend {jax.default_backend()} ({jax.devices()}); adam, '
        f'{SPARSITY:.0%}, mask update every {WINDOW} steps; load {os.getloadavg()[0]:.2f}')
  t0 = time.perf_counter()
  for name in names:
    case = CASES[name](dtype=args.dtype)
    if args.costs_only:
      print_costs(case)
    else:
      print_result(case, bench_model(case, args.rounds, modes, costs=not args.no_costs))
  print(f'\nload at end {os.getloadavg()[0]:.2f}; {time.perf_counter() - t0:.0f} s in all')
  return 0


if __name__ == '__main__':
  sys.exit(main())
