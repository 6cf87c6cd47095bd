"""RigL and SET under N:M and block patterns: drop and grow keep the pattern
(every group of M keeps exactly N; blocks move whole) and the counts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.core import dynamic
from conftest import dict_loss, dict_params


def test_nm_drop_grow_by_hand_regrows_within_the_group():
  nm = sj.NM(2, 4, axis=-2)                  # two groups: the columns
  mask = jnp.array([[1, 0], [1, 1], [0, 1], [0, 0]], bool)
  w = jnp.array([[0.1, 0.0], [5.0, 3.0], [0.0, 4.0], [0.0, 0.0]])
  g = jnp.array([[0.5, 100.0], [9.0, 0.0], [1.0, 0.0], [2.0, 100.0]])
  # k = 4, 25%: one drop, the smallest active |w| (0.1, column 0); column 0
  # regrows one where |g| is largest among its non-survivors (2.0, row 3);
  # column 1 lost nothing and grows nothing despite its large gradients.
  new = dynamic.drop_grow_nm(nm, mask, jnp.abs(w), jnp.abs(g), 0.25)
  np.testing.assert_array_equal(new, [[0, 0], [1, 1], [0, 1], [1, 0]])


def test_block_drop_grow_by_hand_moves_whole_blocks():
  block = sj.Block((2, 2))
  mask = jnp.kron(jnp.array([[1, 0], [0, 1]]), jnp.ones((2, 2))).astype(bool)
  w = jnp.kron(jnp.array([[0.1, 0.0], [0.0, 2.0]]), jnp.ones((2, 2)))
  g = jnp.kron(jnp.array([[0.0, 1.0], [3.0, 0.0]]), jnp.ones((2, 2)))
  g = g.at[0, 0].set(5.0)                    # the dropped block (sum 5) loses to 12
  new = dynamic.drop_grow_units(block, mask, jnp.abs(w), jnp.abs(g), 0.5)
  expected = jnp.kron(jnp.array([[0, 0], [1, 1]]), jnp.ones((2, 2))).astype(bool)
  np.testing.assert_array_equal(new, expected)


def _batch(i):
  x = jax.random.normal(jax.random.fold_in(jax.random.key(11), i), (16, 8))
  y = jax.random.randint(jax.random.fold_in(jax.random.key(12), i), (16,), 0, 4)
  return x, y


def _history(schedule, steps=24):
  tx = sj.sparsify(optax.adam(1e-2), schedule)
  params = dict_params()
  state = tx.init(params)
  params = sj.masked_params(params, state)

  @jax.jit
  def step(params, state, batch):
    updates, state = tx.update(jax.grad(dict_loss)(params, batch), state, params)
    return optax.apply_updates(params, updates), state

  out = [jax.device_get(sj.get_masks(state))]
  for i in range(steps):
    params, state = step(params, state, _batch(i))
    out.append(jax.device_get(sj.get_masks(state)))
  return out


def _assert_moved(history, counts):
  moved = sum(not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y)))
              for x, y in zip(history, history[1:]))
  assert moved >= 2
  for masks in history:
    assert {p: int(c) for p, c in sj.count_active(masks).items()} == counts


@pytest.mark.parametrize('name, grow', [('rigl', 'gradient'), ('set', 'random')])
def test_nm_every_group_keeps_exactly_n_after_updates(name, grow):
  schedule = sj.make_schedule(name, pattern=sj.NM(2, 4), every=4, end=24, drop_fraction=0.5)
  assert schedule.grow == grow
  history = _history(schedule)
  for masks in history:
    for m in jax.tree.leaves(masks):
      groups = np.moveaxis(m, -2, -1).reshape(m.shape[-1], -1, 4).sum(-1)
      assert np.all(groups == 2)
  _assert_moved(history, {p: int(c) for p, c in sj.count_active(history[0]).items()})


@pytest.mark.parametrize('name', ['rigl', 'set'])
def test_block_masks_stay_block_aligned(name):
  schedule = sj.make_schedule(name, sparsity=0.5, pattern=sj.Block((4, 2)), every=4, end=24,
                              drop_fraction=0.5)
  history = _history(schedule)
  for masks in history:
    for m in jax.tree.leaves(masks):
      blocks = m.reshape(m.shape[0] // 4, 4, m.shape[1] // 2, 2)
      assert np.all(blocks.all(axis=(1, 3)) == blocks.any(axis=(1, 3)))
  _assert_moved(history, {p: int(c) for p, c in sj.count_active(history[0]).items()})


def test_rows_move_whole_too():
  schedule = sj.make_schedule('rigl', sparsity=0.5, pattern=sj.Structured(), every=4, end=24,
                              allocation='uniform', drop_fraction=0.5)
  history = _history(schedule)
  for masks in history:
    for m in jax.tree.leaves(masks):
      assert np.all(m.all(axis=0) == m.any(axis=0))
  _assert_moved(history, {p: int(c) for p, c in sj.count_active(history[0]).items()})


def test_pattern_without_units_is_refused():
  class OnlySelect:
    name = 'odd'
    def check(self, path, shape):
      pass
  with pytest.raises(ValueError, match="not 'odd'"):
    sj.make_schedule('rigl', sparsity=0.5, pattern=OnlySelect())
