"""A GPT-2-small-shaped LM (124M parameters) trained with RigL at 90%, FSDP
over 8 fake CPU devices, bf16 compute and remat.

  nice -n 5 .venv/bin/python experiments/gpt2_small_fsdp/run.py --workdir runs/gpt2 \
      [--steps 300] [--record]

Trains configs/gpt2_small_text.py through the training loop (the same code as
`sparsejax train`; it resumes if stopped), then writes results.csv: the step
time (median of the logged windows' steps/s, windows with a mask update
excluded), the wall time of the first update step (it compiles the update
program) and the median of the later ones, less the median step (the
update's own cost), the train state's bytes on one device (params, and the
optimizer state holding the Adam moments and the packed masks; read from the
arrays' shards, so it is what FSDP leaves on each device) beside the same
state unsharded, the process's peak RSS (all 8 fake devices share one
process) and the loss at the start and end. With --record it also copies
results.csv into this folder.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import pathlib
import platform
import resource
import shutil
import statistics
import sys
import time

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from sparsejax import config as config_lib, experiment  # noqa: E402
from sparsejax.core import tree as tree_lib  # noqa: E402
from sparsejax.train import loop  # noqa: E402


def device_bytes(tree, device) -> int:
  """Bytes of `tree`'s arrays held on `device` (their shards there)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
  return total


def full_bytes(tree) -> int:
  return sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)
             if hasattr(x, 'dtype'))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  ap.add_argument('--workdir', required=True)
  ap.add_argument('--steps', type=int, default=300)
  ap.add_argument('--size', default='gpt2_small')
  ap.add_argument('--every', type=int, default=50, help='steps between RigL updates')
  ap.add_argument('--record', action='store_true')
  args = ap.parse_args(argv)
  assert jax.device_count() == 8, f'need 8 devices, got {jax.device_count()}'
  config = config_lib.load_config(f'{REPO}/configs/gpt2_small_text.py:{args.size}')
  config = config_lib.apply_overrides(config, {
      'train.steps': args.steps, 'train.eval_every': args.steps,
      'train.checkpoint_every': min(100, args.steps), 'pruning.every': args.every,
      'pruning.end': int(0.75 * args.steps)})
  task = experiment.build_task(config)
  t0 = time.perf_counter()
  result = loop.train(task, args.workdir, record=experiment.record(config), progress=False)
  wall = time.perf_counter() - t0
  rows = [json.loads(line) for line in open(pathlib.Path(args.workdir) / 'metrics.jsonl')]
  train = [r for r in rows if r['kind'] == 'train']
  updates = [r for r in rows if r['kind'] == 'mask_update']
  rates = [r['steps_per_sec'] for r in train if 'steps_per_sec' in r
           and not any(r['step'] - 10 < u['step'] <= r['step'] for u in updates)]
  step_s = statistics.median(1 / x for x in rates[1:]) if len(rates) > 1 else float('nan')
  upd = [u['step_seconds'] for u in updates if 'step_seconds' in u]
  state, dev = result.state, jax.devices()[0]
  n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params))
  evals = [r for r in rows if r['kind'] == 'eval']
  out = {
      'params': n_params,
      'devices': jax.device_count(),
      'mesh': ' x '.join(f'{k} {v}' for k, v in
                         jax.tree.leaves(state.params)[0].sharding.mesh.shape.items()),
      'steps': args.steps,
      'density': result.summary['density'],
      'step_seconds_median': round(step_s, 3),
      'mask_updates': len(upd),
      'first_update_step_seconds': round(upd[0], 3) if upd else '',
      'later_update_step_seconds_median': round(statistics.median(upd[1:]), 3)
                                          if len(upd) > 1 else '',
      'mask_update_extra_seconds': round(statistics.median(upd[1:]) - step_s, 3)
                                   if len(upd) > 1 else '',
      'params_bytes_per_device': device_bytes(state.params, dev),
      'params_bytes_unsharded': full_bytes(state.params),
      'opt_state_bytes_per_device': device_bytes(state.opt_state, dev),
      'opt_state_bytes_unsharded': full_bytes(state.opt_state),
      'peak_rss_bytes': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
      'loss_first': round(train[0]['loss'], 4),
      'loss_last': round(train[-1]['loss'], 4),
      'test_loss': round(evals[-1]['test_loss'], 4) if evals else '',
      'wall_seconds_this_call': round(wall, 1),
      'machine': f'{platform.machine()} {os.cpu_count()} cores, jax {jax.__version__}',
  }
  path = pathlib.Path(args.workdir) / 'results.csv'
  _write(path, out)
  _write(path.with_name('derived.csv'), derived(out, prunable(state.params, task)))
  for k, v in out.items():
    print(f'{k:34s} {v}')
  if args.record:
    for name in ('results.csv', 'derived.csv'):
      shutil.copy(path.with_name(name), HERE / name)


def prunable(params, task) -> int:
  return sum(int(np.prod(s)) for s in tree_lib.prunable_shapes(params, task.rule).values())


def derived(row: dict, n_prunable: int) -> dict:
  """The README's derived numbers, from a results.csv row."""
  f = {k: float(row[k]) for k in ('params_bytes_unsharded', 'opt_state_bytes_unsharded',
                                  'mask_update_extra_seconds', 'step_seconds_median',
                                  'peak_rss_bytes')}
  return {
      'prunable_weights': n_prunable,
      'prunable_millions': round(n_prunable / 1e6, 1),
      # the optimizer state beyond Adam's two params-sized moments: the packed masks
      'packed_masks_mb': round((f['opt_state_bytes_unsharded']
                                - 2 * f['params_bytes_unsharded']) / 1e6, 1),
      'update_over_step': round(f['mask_update_extra_seconds'] / f['step_seconds_median'], 2),
      'peak_rss_gib': round(f['peak_rss_bytes'] / 2 ** 30, 1),
  }


def _write(path, row: dict) -> None:
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=list(row))
    w.writeheader()
    w.writerow(row)


if __name__ == '__main__':
  main()
