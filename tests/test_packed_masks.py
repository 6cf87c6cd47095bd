"""Masks stored as bits (issue 13.2): `sparsify(..., pack_masks=True)` and
`train.pack_masks`: bitwise the same training, masks plus Adam's moments
within 1.02x dense Adam's state, and every reader gets bool masks back."""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.core import transform
from sparsejax.programs import results as results_lib
from sparsejax.train import inspection, loop

ROOT = pathlib.Path(__file__).resolve().parent.parent


def problem():
  k = jax.random.split(jax.random.key(0), 4)
  params = {'a': {'kernel': jax.random.normal(k[0], (40, 64))},
            'b': {'kernel': jax.random.normal(k[1], (64, 10)), 'bias': jnp.zeros(10)}}
  x, y = jax.random.normal(k[2], (32, 40)), jax.random.randint(k[3], (32,), 0, 10)

  def loss(p):
    out = jnp.tanh(x @ p['a']['kernel']) @ p['b']['kernel'] + p['b']['bias'][None, :]
    return optax.softmax_cross_entropy_with_integer_labels(out, y).mean()
  return params, loss


def nbytes(tree):
  return sum(x.nbytes for x in jax.tree.leaves(tree))


@pytest.mark.parametrize('mode', ['in_step', 'separate'])
def test_packed_masks_train_bitwise_the_same(mode):
  params, loss = problem()
  out = {}
  for pack in (False, True):
    schedule = sj.make_schedule('rigl', sparsity=0.9, every=3, end=12, allocation='uniform')
    tx = transform.sparsify(optax.adam(1e-2), schedule, update=mode, pack_masks=pack)
    state = tx.init(params)
    p = transform.masked_params(params, state)
    updates = set(schedule.update_steps(14))

    @functools.partial(jax.jit, static_argnums=2)
    def step(p, state, flag):
      extra = {'update_masks': flag} if mode == 'separate' else {}
      u, state = tx.update(jax.grad(loss)(p), state, p, **extra)
      return optax.apply_updates(p, u), state
    for i in range(14):
      p, state = step(p, state, i in updates)
    out[pack] = (p, transform.get_masks(state), state)
  (p0, m0, s0), (p1, m1, s1) = out[False], out[True]
  for a, b in zip(jax.tree.leaves((p0, m0)), jax.tree.leaves((p1, m1))):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a, b)
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(m1), jax.tree.leaves(jax.device_get(
          transform.get_masks(tx.init(params))))))      # the masks did move
  dense_adam = nbytes(optax.adam(1e-2).init(params))
  assert nbytes(s0) / dense_adam > 1.12                  # bool masks: 1/8 more
  assert nbytes(s1) / dense_adam <= 1.02                 # bits: 1/64 more


def test_pack_masks_in_the_training_loop(tmp_path):
  cfg = config_lib.apply_overrides(
      config_lib.load_config(ROOT / 'configs' / 'mnist1d_rigl.py'),
      {'train.steps': 20, 'train.eval_every': 20, 'train.checkpoint_every': 20,
       'train.log_every': 20, 'model.options.hidden': 32, 'pruning.every': 5,
       'pruning.end': 15})
  results = {}
  for pack in (False, True):
    task = experiment.build_task(config_lib.apply_overrides(cfg, {'train.pack_masks': pack}))
    results[pack] = loop.train(task, tmp_path / str(pack), progress=False,
                               log=lambda s: None)
  a, b = (jax.device_get(results[k].state) for k in (False, True))
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(x, y)
  masks = jax.device_get(results[True].masks)
  for x, y in zip(jax.tree.leaves(jax.device_get(results[False].masks)), jax.tree.leaves(masks)):
    np.testing.assert_array_equal(x, y)
  # readers of the checkpoint on disk get the bool masks back
  _, _, saved = results_lib.final_weights(tmp_path / 'True')
  for x, y in zip(jax.tree.leaves(saved), jax.tree.leaves(masks)):
    assert x.dtype == np.bool_
    np.testing.assert_array_equal(x, y)
  rows = inspection.layer_table(jax.device_get(results[True].state._asdict()))
  kernels = [r for r in rows if r['path'].endswith('kernel')]
  assert kernels and all(r['source'] == 'mask' for r in kernels)
  assert sum(r['active'] for r in kernels) == sum(int(m.sum()) for m in jax.tree.leaves(masks))
  with pytest.raises(config_lib.ConfigError, match='train.pack_masks'):
    experiment.build_task(config_lib.apply_overrides(cfg, {'train.pack_masks': 'yes'}))
