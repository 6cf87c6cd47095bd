"""Runs with the same program key share one compiled initialisation (13.6):
a fixed mask is an argument of the init program, not a constant of it, and
the state comes out bitwise as from the run's own compiled `init_state`."""

import jax
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import models
from sparsejax.core import masks as masks_lib, tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.train import compiled, loop
from sparsejax.train.task import LoopSettings, Task


def _task(**over):
  x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  ds = data_base.Dataset('toy', data_base.ArraySource(x, y), data_base.ArraySource(x, y), None,
                         2, (8,), np.float32)
  return Task(dataset=ds, optimizer=optax.adam(1e-2), model=models.MLP((16,), num_classes=2),
              batch_size=8, eval_batch_size=32, loop=LoopSettings(steps=4), **over)


def _random_masks(params, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda p: rng.random(p.shape) < 0.5 if p.ndim >= 2 else None, params)


def _own_program(run):
  """What `initial_state` compiled before 13.6: the run's own jit of init_state."""
  start = run.start
  return jax.jit(run.init_state, out_shardings=run.state_sh)(
      jax.random.key(run.task.loop.seed), start.params, start.model_state)


def _fixed_runs(base, dense, seeds):
  runs = []
  for seed in seeds:
    m = _random_masks(dense, seed)
    runs.append(loop.build(base.replace(schedule=sj.FixedMask(masks=m)),
                           start=loop.Start(jax.device_get(masks_lib.apply_masks(dense, m)))))
  return runs


def _assert_bitwise(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(x.reshape(-1).view(np.uint8), y.reshape(-1).view(np.uint8))


@pytest.mark.parametrize('over', [{}, {'pack_masks': True, 'accumulate': 2}])
def test_fixed_mask_runs_share_one_init_program(over):
  base = _task(**over)
  dense = jax.device_get(loop.initial_state(loop.build(base)).params)
  runs = _fixed_runs(base, dense, seeds=(1, 2, 3))
  assert len({compiled.program_key(r) for r in runs}) == 1
  states = [loop.initial_state(r) for r in runs]
  shared = compiled.init_program(runs[0])
  assert shared is compiled.init_program(runs[-1])
  assert shared._cache_size() == 1          # compiled once for the three masks
  for run, state in zip(runs, states):
    _assert_bitwise(state, _own_program(run))
    got = dict(tree_lib.leaves_with_paths(sj.get_masks(state.opt_state)))
    for path, m in tree_lib.leaves_with_paths(run.schedule.masks):
      np.testing.assert_array_equal(got[path], m)


def test_compact_state_keeps_its_own_init():
  """Compact optimizer state closes over the kept indices: no shared init."""
  base = _task(optimizer_state='compact')
  dense = jax.device_get(loop.initial_state(loop.build(_task())).params)
  runs = _fixed_runs(base, dense, seeds=(1, 2))
  for run in runs:
    assert compiled.init_program(run) is None
    _assert_bitwise(loop.initial_state(run), _own_program(run))
