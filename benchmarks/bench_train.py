"""Input-pipeline overhead: the full training loop against the bare jitted step.

LeNet-300-100 on MNIST (configs/lenet300_100_mnist.py, batch 60, Adam), one
device. The bare step runs the same compiled train step on one batch that
stays on the device; the full loop is `train_and_evaluate` with data loading,
shuffling, host-to-device copies, metrics and the progress bookkeeping (no
evaluation or checkpoint inside the timed windows). Rounds alternate between
the two; each reports steps per second over windows after compilation.

  python benchmarks/bench_train.py [--rounds 3] [--steps 2000] [--config.KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparsejax import experiment
from sparsejax import config as config_lib  # noqa: E402
from sparsejax.data import base as data_base  # noqa: E402
from sparsejax.train import loop, metrics as metrics_lib, sharding as sharding_lib  # noqa: E402
from sparsejax.train import step as step_lib  # noqa: E402

WINDOW = 100


def make_config(steps, overrides):
  c = config_lib.load_config(ROOT / 'configs' / 'lenet300_100_mnist.py')
  return config_lib.apply_overrides(c, {
      'train.steps': steps, 'train.log_every': WINDOW, 'train.eval_every': 10 * steps,
      'train.checkpoint_every': 10 * steps, **overrides})


def bare_steps_per_sec(config, steps, distinct=1):
  """Windows of the compiled train step on `distinct` device-resident batches
  used in turn (1: the same batch every step, the cache-hot baseline)."""
  run = loop.build(experiment.build_task(config))
  train_fn = step_lib.compile_train_step(step_lib.make_train_step(run.task, run.tx),
                                        run.mesh, run.state_sh, 4, 1)
  state = jax.jit(run.init_state, out_shardings=run.state_sh)(jax.random.key(0))
  t = run.task
  batches = [sharding_lib.put_batch(run.mesh, t.dataset.train.get(data_base.batch_indices(
      len(t.dataset.train), t.batch_size, 0, k))) for k in range(distinct)]
  state, m = train_fn(state, batches[0])              # compile
  jax.block_until_ready(m)
  rates = []
  for w in range(steps // WINDOW):
    t0 = time.perf_counter()
    for i in range(WINDOW):
      state, m = train_fn(state, batches[(w * WINDOW + i) % distinct])
    jax.block_until_ready(m)
    rates.append(WINDOW / (time.perf_counter() - t0))
  return rates


def loop_steps_per_sec(config, steps):
  """steps_per_sec of the loop's log windows, the first (compilation) left out."""
  with tempfile.TemporaryDirectory() as tmp:
    experiment.train_and_evaluate(config, tmp, progress=False)
    rows = metrics_lib.read_rows(pathlib.Path(tmp) / 'metrics.jsonl')
  rates = [r['steps_per_sec'] for r in rows if r['kind'] == 'train' and 'steps_per_sec' in r]
  return rates[1:-1]      # the first window compiles; the last one evaluates


def main(argv=None):
  argv, overrides = config_lib.split_overrides(list(sys.argv[1:] if argv is None else argv))
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=2000)
  args = parser.parse_args(argv)
  config = make_config(args.steps, overrides)
  print('sparsejax training-loop benchmark: LeNet-300-100 on MNIST, batch '
        f'{config.data.batch_size}, {config.optimizer.name}, schedule {config.pruning.schedule}')
  print(f'machine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__}, '
        f'backend {jax.default_backend()}, {jax.device_count()} device(s)')
  variants = {
      'bare jitted step': lambda: bare_steps_per_sec(config, args.steps),
      'bare step, 128 distinct batches on device': lambda: bare_steps_per_sec(
          config, args.steps, distinct=128),
      'full loop, data on device (default)': lambda: loop_steps_per_sec(
          config_lib.apply_overrides(config, {'data.on_device': 'yes'}), args.steps),
      'full loop, host prefetch thread': lambda: loop_steps_per_sec(
          config_lib.apply_overrides(config, {'data.on_device': 'no'}), args.steps),
  }
  rates = {k: [] for k in variants}
  t0 = time.perf_counter()
  for r in range(args.rounds):
    line = []
    for name, fn in variants.items():
      got = fn()
      rates[name] += got
      line.append(f'{name.split(",")[0] if name.startswith("bare") else name}: '
                  f'{statistics.median(got):.0f}')
    print(f'  round {r + 1} (steps/s): ' + '; '.join(line), flush=True)
  bare = statistics.median(rates['bare jitted step'])
  print()
  print('| what | steps/s (median of windows) | p25-p75 | ms/step | time vs bare step |')
  print('|---|---|---|---|---|')
  for name, got in rates.items():
    med = statistics.median(got)
    q = np.percentile(got, [25, 75])
    print(f'| {name} | {med:.1f} | {q[0]:.1f}-{q[1]:.1f} | {1000 / med:.3f} | '
          f'{bare / med:.3f}x |')
  for name in list(rates)[2:]:
    overhead = bare / statistics.median(rates[name]) - 1
    verdict = 'PASS' if overhead <= 0.10 else 'FAIL'
    print(f'{name}: overhead {100 * overhead:+.1f}% of the bare step time (target <= 10%: '
          f'{verdict})')
  print(f'{args.rounds} rounds, windows of {WINDOW} steps, {time.perf_counter() - t0:.0f} s '
        'in all')
  return 0


if __name__ == '__main__':
  sys.exit(main())
