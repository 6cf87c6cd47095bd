"""Overhead of sparsejax's training transformation on LeNet-300-100 (CPU).

Run by hand, not in tests:

  PYTHONPATH=. python benchmarks/bench_core.py [--steps N] [--repeats R]
      [--update-calls C] [--split]

Part 1 times a jitted train step (forward, backward, optimizer update,
apply_updates; params and optimizer state donated) of a 784-300-100-10 MLP at
batch 128 for a dense baseline and for several sparsejax schedules. Every
variant is timed over windows of `--steps` consecutive steps (a multiple of
the 100-step mask-update period, so each window holds mask updates at the
usual rate and their cost is amortised). The variants are interleaved
round-robin, `--repeats` windows each, so that machine noise hits all of them
alike; the median per-step time of each variant is compared with the dense
median of the same run.

Part 2 times one mask update on its own (`schedule.update` under jit, as the
`sparsify` transformation calls it) and, for comparison, a top-k of the
784x300 kernel by `jax.lax.top_k` and by `sparsejax.topk_mask`.

Only ratios measured in one run mean anything; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import platform
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

try:
  import sparsejax
except ImportError:   # run from a checkout without PYTHONPATH=.
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
  import sparsejax
from sparsejax.core import transform as transform_lib

BATCH = 128
UPDATE_EVERY = 100
SPARSITY = 0.9

# Targets from the issue: (max ratio vs dense) per variant; None: report only.
STEP_TARGETS = {
    'dense': None,
    'fixed 90%': 1.03,
    'gradual': 1.05,
    'rigl': 1.10,
    'set': None,
    'gradual, no upd': None,
    'rigl, no upd': None,
}
UPDATE_TARGET_MS = 10.0


class LeNet300100(nn.Module):
  """LeNet-300-100: a 784-300-100-10 MLP with ReLU."""

  @nn.compact
  def __call__(self, x):
    x = x.reshape((x.shape[0], -1))
    x = nn.relu(nn.Dense(300)(x))
    x = nn.relu(nn.Dense(100)(x))
    return nn.Dense(10)(x)


MODEL = LeNet300100()


def loss_fn(params, x, y):
  logits = MODEL.apply({'params': params}, x)
  labels = y.astype(jnp.int32)   # labels arrive as float32 0..9
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_batch(seed: int):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((BATCH, 28, 28, 1), dtype=np.float32)
  y = rng.integers(0, 10, size=(BATCH,)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def init_params(seed: int = 0):
  x, _ = make_batch(seed)
  return MODEL.init(jax.random.key(seed), x)['params']


def copy_tree(tree):
  """Fresh device buffers (each variant owns, and donates, its own)."""
  return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


def make_train_step(tx):
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, loss
  return jax.jit(step, donate_argnums=(0, 1))


def build_variants(params, split=False):
  """{name: (jitted step, params, opt_state)}, each with its own buffers.

  With split, two more variants whose schedule never fires in the timed
  windows (start just below end = 10**9): their cost over `fixed 90%` is
  what the update machinery (the lax.cond and what it forces) costs on every
  step, apart from the mask updates themselves.
  """
  _, fixed_masks = sparsejax.prune(params, SPARSITY)
  schedules = {
      'fixed 90%': sparsejax.make_schedule('fixed', masks=fixed_masks),
      'gradual': sparsejax.make_schedule('gradual', sparsity=SPARSITY, start=0,
                                         end=10**9, every=UPDATE_EVERY),
      'rigl': sparsejax.make_schedule('rigl', sparsity=SPARSITY, every=UPDATE_EVERY,
                                      end=10**9),
      'set': sparsejax.make_schedule('set', sparsity=SPARSITY, every=UPDATE_EVERY,
                                     end=10**9),
  }
  if split:
    never = dict(sparsity=SPARSITY, start=10**9 - 1, end=10**9, every=UPDATE_EVERY)
    schedules['gradual, no upd'] = sparsejax.make_schedule('gradual', **never)
    schedules['rigl, no upd'] = sparsejax.make_schedule('rigl', **never)
  variants = {}
  tx = optax.adam(1e-3)
  p = copy_tree(params)
  variants['dense'] = [make_train_step(tx), p, tx.init(p)]
  for name, schedule in schedules.items():
    tx = sparsejax.sparsify(optax.adam(1e-3), schedule)
    p = copy_tree(params)
    state = tx.init(p)
    p = sparsejax.masked_params(p, state)   # start from the sparse model
    variants[name] = [make_train_step(tx), p, state]
  return variants, schedules


def run_window(variant, n_steps, x, y):
  """n_steps consecutive steps, blocked at the end; returns seconds."""
  step, params, opt_state = variant
  loss = None
  t0 = time.perf_counter()
  for _ in range(n_steps):
    params, opt_state, loss = step(params, opt_state, x, y)
  jax.block_until_ready((params, opt_state, loss))
  dt = time.perf_counter() - t0
  variant[1], variant[2] = params, opt_state
  return dt


def warm_up(variants, x, y):
  """Compile every variant, then run one full update period of each so that
  the mask-update branch has run and allocations have settled."""
  for v in variants.values():
    run_window(v, 1, x, y)
  for v in variants.values():
    run_window(v, UPDATE_EVERY, x, y)


def bench_steps(variants, n_steps, repeats, x, y):
  """Round-robin windows; {name: [seconds per step, one per round]}.

  Every round runs one window of each variant; the starting variant rotates
  from round to round so that no variant always follows the same one.
  """
  names = list(variants)
  per_step = {name: [] for name in names}
  for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      per_step[name].append(run_window(variants[name], n_steps, x, y) / n_steps)
  return per_step


def time_calls(fn, args, n_calls):
  """Median, p25 and p75 seconds of one blocked call of fn(*args)."""
  jax.block_until_ready(fn(*args))   # compile
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(n_calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  q = np.percentile(times, [25, 50, 75])
  return q[1], q[0], q[2]


def bench_updates(params, schedules, n_calls):
  """{name: (median, p25, p75) seconds} for one mask update and the top-k baselines."""
  x, y = make_batch(1)
  grads = jax.jit(jax.grad(loss_fn))(params, x, y)
  results, notes = {}, {}

  # Gradual: from dense masks to 90% on all three kernels (the last update of
  # the cubic ramp, where sparsity_at(end) = target).
  grad_sched = schedules['gradual']
  masks, state = grad_sched.init(params)
  upd = jax.jit(grad_sched.update)
  step_end = jnp.int32(grad_sched.end)
  new, _ = upd(masks, params, grads, step_end, state)
  notes['gradual'] = float(sparsejax.overall_sparsity(new))
  results['gradual'] = time_calls(upd, (masks, params, grads, step_end, state), n_calls)

  # RigL and SET: drop/grow on all three kernels at an update step.
  for name in ('rigl', 'set'):
    sched = schedules[name]
    masks, state = sched.init(params)
    p = sparsejax.apply_masks(params, masks)
    upd = jax.jit(sched.update)
    step = jnp.int32(UPDATE_EVERY)
    assert bool(sched.should_update(step))
    new, _ = upd(masks, p, grads, step, state)
    moved = sum(int(jnp.sum(a & ~b)) for a, b in
                zip(jax.tree.leaves(new), jax.tree.leaves(masks)))
    notes[name] = moved
    results[name] = time_calls(upd, (masks, p, grads, step, state), n_calls)

  # The whole mask-change branch of `sparsify` for RigL (update, compare the
  # masks, reset the Adam moments where they changed), as run under lax.cond.
  # reset_moments is internal to sparsify; skip the row if it moved.
  reset_moments = getattr(transform_lib, 'reset_moments', None)
  if reset_moments is None:
    notes['no reset'] = True
    return _baselines(params, results, notes, n_calls)
  sched = schedules['rigl']
  inner = optax.with_extra_args_support(optax.adam(1e-3))
  masks, state = sched.init(params)
  p = sparsejax.apply_masks(params, masks)
  inner_state = inner.init(p)

  def rigl_branch(masks, params, grads, step, sched_state, inner_state):
    new_masks, sched_state = sched.update(masks, params, grads, step, sched_state)
    changed = jax.tree.map(lambda a, b: a != b, masks, new_masks)
    return new_masks, sched_state, reset_moments(inner, inner_state, changed)

  results['rigl + moment reset'] = time_calls(
      jax.jit(rigl_branch), (masks, p, grads, jnp.int32(UPDATE_EVERY), state, inner_state),
      n_calls)
  return _baselines(params, results, notes, n_calls)


def _baselines(params, results, notes, n_calls):
  """Top-k of the 784x300 kernel keeping 10%: lax.top_k and topk_mask."""
  kernel = params['Dense_0']['kernel']
  k = kernel.size - int(round(SPARSITY * kernel.size))
  scores = jnp.abs(kernel)
  lax_topk = jax.jit(lambda s: jax.lax.top_k(s.ravel(), k))
  results['lax.top_k 784x300'] = time_calls(lax_topk, (scores,), n_calls)
  sj_topk = jax.jit(lambda s: sparsejax.topk_mask(s, k))
  results['topk_mask 784x300'] = time_calls(sj_topk, (scores,), n_calls)
  # Cross-check: both select the same entries (magnitudes are distinct).
  _, idx = lax_topk(scores)
  ref = np.zeros(kernel.size, bool)
  ref[np.asarray(idx)] = True
  notes['topk agree'] = bool(np.array_equal(ref, np.asarray(sj_topk(scores)).ravel()))
  return results, notes


def source_fingerprint() -> str:
  """Short hash of the sparsejax sources, to tell which version was timed."""
  root = pathlib.Path(sparsejax.__file__).parent
  h = hashlib.sha256()
  for f in sorted(root.rglob('*.py')):
    h.update(f.relative_to(root).as_posix().encode())
    h.update(f.read_bytes())
  return h.hexdigest()[:12]


def load_line(what: str) -> str:
  """The 1/5/15-minute load averages (this process included)."""
  if not hasattr(os, 'getloadavg'):
    return f'{what}: unknown'
  return f'{what}: ' + ' '.join(f'{v:.2f}' for v in os.getloadavg())


def _cpu_busy_seconds():
  """(all CPUs' busy seconds from /proc/stat, this process's CPU seconds), or None."""
  try:
    with open('/proc/stat') as f:
      fields = [int(v) for v in f.readline().split()[1:]]
  except (OSError, ValueError):
    return None
  idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
  hz = os.sysconf('SC_CLK_TCK')
  t = os.times()
  return (sum(fields[:8]) - idle) / hz, t.user + t.system


class OtherLoad:
  """CPU time that other processes used while a block ran, per second of wall time."""

  def __enter__(self):
    self.start, self.t0 = _cpu_busy_seconds(), time.perf_counter()
    return self

  def __exit__(self, *exc):
    end, wall = _cpu_busy_seconds(), time.perf_counter() - self.t0
    self.value = None
    if self.start is not None and end is not None and wall > 0:
      self.value = max(0.0, ((end[0] - self.start[0]) - (end[1] - self.start[1])) / wall)

  def line(self, what: str) -> str:
    if self.value is None:
      return f'{what}: other processes\' CPU use unknown'
    warn = '  (noisy: other work competed for the CPUs)' if self.value > 0.1 else ''
    return (f'{what}: other processes used {self.value:.2f} CPUs on average '
            f'(of {os.cpu_count()}){warn}')


def verdict(ratio: float, target: float, ci: tuple[float, float]) -> str:
  """PASS/MISS on the measured ratio; '(noise)' when the 95% interval
  straddles the target, so that this run cannot tell."""
  res = 'PASS' if ratio <= target else 'MISS'
  return res + (' (noise)' if ci[0] <= target < ci[1] else '')


def ratio_ci(times, dense_times, n_boot=2000, seed=0):
  """95% bootstrap interval of median(times) / median(dense_times), resampling
  rounds (a round's two windows stay together)."""
  t, d = np.asarray(times), np.asarray(dense_times)
  rng = np.random.default_rng(seed)
  idx = rng.integers(0, len(t), size=(n_boot, len(t)))
  r = np.median(t[idx], axis=1) / np.median(d[idx], axis=1)
  lo, hi = np.percentile(r, [2.5, 97.5])
  return float(lo), float(hi)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument('--steps', type=int, default=100,
                  help='steps per timing window, a multiple of %d (default 100)' % UPDATE_EVERY)
  ap.add_argument('--repeats', type=int, default=30,
                  help='windows per variant, interleaved round-robin (default 30)')
  ap.add_argument('--update-calls', type=int, default=50,
                  help='calls timed per mask-update measurement (default 50)')
  ap.add_argument('--split', action='store_true',
                  help='also time gradual and rigl schedules that never fire in the '
                       'windows, to split per-step cost from mask-update cost')
  args = ap.parse_args(argv)
  if args.steps < UPDATE_EVERY or args.steps % UPDATE_EVERY:
    ap.error(f'--steps must be a positive multiple of {UPDATE_EVERY}')
  if args.repeats < 1:
    ap.error('--repeats must be >= 1')

  dev = jax.devices()[0]
  print('sparsejax core benchmark: LeNet-300-100, batch %d, optax.adam(1e-3)' % BATCH)
  print(f'machine: {platform.machine()} {platform.processor() or ""}'.rstrip()
        + f', os.cpu_count()={os.cpu_count()}'
        + (f', sched_getaffinity={len(os.sched_getaffinity(0))}'
           if hasattr(os, 'sched_getaffinity') else ''))
  print(f'python {platform.python_version()}, jax {jax.__version__}, '
        f'jaxlib {jax.lib.__version__ if hasattr(jax.lib, "__version__") else "?"}, '
        f'backend {jax.default_backend()} ({dev.device_kind}), '
        f'{platform.system()} {platform.release()}')
  print(f'sparsejax {sparsejax.__version__}, sources sha256 {source_fingerprint()}')
  print(f'windows: {args.steps} steps x {args.repeats} repeats per variant, '
        f'round-robin; mask update every {UPDATE_EVERY} steps')
  print(load_line('load at start'))
  sys.stdout.flush()

  t_start = time.perf_counter()
  params = init_params(0)
  x, y = make_batch(0)
  variants, schedules = build_variants(params, split=args.split)
  warm_up(variants, x, y)
  t_warm = time.perf_counter() - t_start
  with OtherLoad() as steps_load:
    per_step = bench_steps(variants, args.steps, args.repeats, x, y)
  t_steps = time.perf_counter() - t_start - t_warm

  med = {n: statistics.median(v) for n, v in per_step.items()}
  dense = med['dense']
  print()
  print(f'1. train step (median over {args.repeats} windows of {args.steps} steps)')
  hdr = (f'{"variant":<15} {"ms/step":>8} {"p25-p75 ms":>15} {"vs dense":>9} '
         f'{"95% CI":>13} {"paired":>8} {"target":>9}  result')
  print(hdr)
  print('-' * len(hdr))
  for name, times in per_step.items():
    p25, p75 = np.percentile(times, [25, 75]) * 1e3
    ratio = med[name] / dense
    # Median of the ratios to the dense window of the same round (less
    # sensitive to load that drifts between rounds); the verdict uses `ratio`.
    paired = statistics.median(t / d for t, d in zip(times, per_step['dense']))
    ci = ratio_ci(times, per_step['dense'])
    target = STEP_TARGETS[name]
    tgt = '-' if target is None else f'<={target:.2f}x'
    res = '-' if target is None else verdict(ratio, target, ci)
    ci_txt = '-' if name == 'dense' else f'{ci[0]:.3f}-{ci[1]:.3f}'
    print(f'{name:<15} {med[name] * 1e3:8.3f} {p25:7.3f}-{p75:<7.3f} {ratio:8.3f}x '
          f'{ci_txt:>13} {paired:7.3f}x {tgt:>9}  {res}')
  # Amortised extra cost per update window, relative to the fixed mask.
  fixed = med['fixed 90%']
  print(f'   estimated extra cost per {UPDATE_EVERY}-step period over fixed 90% '
        f'((step - fixed step) x {UPDATE_EVERY}):')
  print('   ' + ', '.join(f'{name} {(med[name] - fixed) * UPDATE_EVERY * 1e3:.2f} ms'
                          for name in ('gradual', 'rigl', 'set')))
  sys.stdout.flush()

  t0 = time.perf_counter()
  with OtherLoad() as upd_load:
    upd, notes = bench_updates(params, schedules, args.update_calls)
  t_upd = time.perf_counter() - t0
  print()
  print(f'2. one mask update, jitted, on its own (median of {args.update_calls} calls)')
  hdr = f'{"what":<22} {"ms":>8} {"p25-p75 ms":>15} {"target":>9}  result'
  print(hdr)
  print('-' * len(hdr))
  targeted = ('gradual', 'rigl', 'set')
  for name, (m, p25, p75) in upd.items():
    if name in targeted:
      tgt, res = f'<{UPDATE_TARGET_MS:g} ms', 'PASS' if m * 1e3 < UPDATE_TARGET_MS else 'MISS'
    else:
      tgt, res = '-', '-'
    print(f'{name:<22} {m * 1e3:8.3f} {p25 * 1e3:7.3f}-{p75 * 1e3:<7.3f} {tgt:>9}  {res}')
  print(f'   gradual update reaches sparsity {notes["gradual"]:.4f}; '
        f'rigl moved {notes["rigl"]} weights, set moved {notes["set"]}; '
        f'lax.top_k and topk_mask agree: {notes["topk agree"]}')
  if notes.get('no reset'):
    print('   (sparsejax.core.transform.reset_moments not found: moment-reset row skipped)')
  print()
  print('ms/step: median over windows; vs dense: ratio of medians (the verdict); 95% CI:')
  print('bootstrap over rounds; paired: median over rounds of (window / dense window of')
  print("the same round). '(noise)': the CI straddles the target, this run cannot tell.")
  print(steps_load.line('during part 1'))
  print(upd_load.line('during part 2'))
  print(load_line('load at end'))
  print(f'(compile and warm-up {t_warm:.1f} s, step timing {t_steps:.1f} s, '
        f'update timing {t_upd:.1f} s)')


if __name__ == '__main__':
  main()
