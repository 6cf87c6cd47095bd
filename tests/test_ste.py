"""Straight-through sparse training (STE) and SR-STE (Zhou et al. 2021) as a
schedule: dense shadow weights in the schedule state, params = shadow * mask
after every update, the mask recomputed from the shadow's magnitude."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.core import protocol, schedules
from sparsejax.core import transform

ALL = lambda path, p: True   # noqa: E731  (every leaf prunable)
W0 = np.array([[1.0, -2.0], [0.5, 3.0]], np.float32)


def _steps(tx, params, grads, n, jit=False):
  """n updates with fixed grads; (params, state) after each."""
  state = tx.init(params)
  params = sj.masked_params(params, state)
  update = jax.jit(tx.update) if jit else tx.update
  out = []
  for _ in range(n):
    u, state = update(grads, state, params)
    params = optax.apply_updates(params, u)
    out.append((params, state))
  return out


@pytest.mark.parametrize('jit', [False, True])
def test_sgd_by_hand_shadow_moves_where_pruned_and_mask_flips(jit):
  # keep 2 of 4 by |w|: -2 and 3. The pruned 0.5 grows by 1 a step (lr 1,
  # g = -1) and overtakes the kept -2 (which shrinks by 0.125 a step) at step 1.
  tx = sj.sparsify(optax.sgd(1.0), sj.make_schedule('ste', sparsity=0.5), rule=ALL)
  g = {'w': jnp.array([[0.0, 0.125], [-1.0, 0.0]])}
  (p0, s0), (p1, s1), (p2, s2) = _steps(tx, {'w': jnp.asarray(W0)}, g, 3, jit)
  np.testing.assert_array_equal(s0.schedule_state['w'], [[1.0, -2.125], [1.5, 3.0]])
  np.testing.assert_array_equal(p0['w'], [[0.0, -2.125], [0.0, 3.0]])
  np.testing.assert_array_equal(s1.masks['w'], [[False, False], [True, True]])
  np.testing.assert_array_equal(p1['w'], [[0.0, 0.0], [2.5, 3.0]])
  # the dropped -2.25 stays in the shadow and keeps taking its gradient
  np.testing.assert_array_equal(s2.schedule_state['w'], [[1.0, -2.375], [3.5, 3.0]])
  np.testing.assert_array_equal(p2['w'], [[0.0, 0.0], [3.5, 3.0]])


def test_sr_ste_decays_only_pruned_dense_weights():
  g = {'w': jnp.zeros((2, 2))}
  tx = sj.sparsify(optax.sgd(1.0), sj.make_schedule('ste', sparsity=0.5, sr_decay=0.5),
                   rule=ALL)
  (p0, s0), (p1, s1) = _steps(tx, {'w': jnp.asarray(W0)}, g, 2)
  # w <- w - lr * (g + 0.5 * (1 - mask) * w): pruned 1 and 0.5 halve, kept stay
  np.testing.assert_array_equal(s0.schedule_state['w'], [[0.5, -2.0], [0.25, 3.0]])
  np.testing.assert_array_equal(s1.schedule_state['w'], [[0.25, -2.0], [0.125, 3.0]])
  np.testing.assert_array_equal(p1['w'], [[0.0, -2.0], [0.0, 3.0]])
  plain = sj.sparsify(optax.sgd(1.0), sj.make_schedule('ste', sparsity=0.5), rule=ALL)
  np.testing.assert_array_equal(_steps(plain, {'w': jnp.asarray(W0)}, g, 2)[-1][1]
                                .schedule_state['w'], W0)


def _regression(seed=0):
  k = jax.random.split(jax.random.key(seed), 4)
  params = {'w': jax.random.normal(k[0], (8, 4)), 'b': jnp.zeros((4,))}
  x = jax.random.normal(k[1], (32, 8))
  y = x @ jax.random.normal(k[2], (8, 4))
  return params, (x, y)


def _loss(params, batch):
  x, y = batch
  return jnp.mean(jnp.square(x @ params['w'] + params['b'][None, :] - y))


def _train(tx, steps, update_steps=None):
  """Jitted real steps; the masks, params and shadow after every step."""
  params, batch = _regression()
  state = tx.init(params)
  params = sj.masked_params(params, state)

  @functools.partial(jax.jit, static_argnames='flag')
  def step(params, state, flag=None):
    grads = jax.grad(_loss)(params, batch)
    kw = {} if flag is None else {'update_masks': flag}
    updates, state = tx.update(grads, state, params, **kw)
    return optax.apply_updates(params, updates), state

  history = []
  for i in range(steps):
    flag = None if update_steps is None else i in update_steps
    params, state = step(params, state, flag)
    history.append(jax.device_get((params, state)))
  return history


def test_2_4_exact_on_every_step_and_params_are_shadow_times_mask_with_adam():
  schedule = sj.make_schedule('ste', pattern=sj.NM(2, 4), sr_decay=2e-4)
  history = _train(sj.sparsify(optax.adam(0.2), schedule), 20)
  flips = 0
  for i, (params, state) in enumerate(history):
    m = np.asarray(state.masks['w'])
    groups = m.T.reshape(4, 2, 4).sum(-1)          # groups of 4 along axis -2
    assert np.all(groups == 2), f'step {i}: {groups}'
    w, shadow = np.asarray(params['w']), np.asarray(state.schedule_state['w'])
    assert np.all(w[~m] == 0.0)                    # exactly zero off the mask
    np.testing.assert_array_equal(w, np.where(m, shadow, 0.0))   # bitwise
    assert state.schedule_state['b'] is None and state.masks['b'] is None
    flips += i > 0 and not np.array_equal(m, history[i - 1][1].masks['w'])
  assert flips > 0                                 # the mask really moved
  assert history[-1][0]['w'].dtype == jnp.float32


def test_params_exactly_zero_off_mask_with_adamw_unstructured():
  schedule = sj.make_schedule('ste', sparsity=0.75, every=2)
  history = _train(sj.sparsify(optax.adamw(0.3, weight_decay=0.1), schedule), 12)
  for i, (params, state) in enumerate(history):
    m = np.asarray(state.masks['w'])
    assert m.sum() == 8
    assert np.all(np.asarray(params['w'])[~m] == 0.0)
    if i % 2 == 1:     # odd counts do not recompute the mask
      np.testing.assert_array_equal(m, history[i - 1][1].masks['w'])


def test_separate_update_program_is_bitwise_the_single_program():
  schedule = sj.make_schedule('ste', sparsity=0.5, every=3)
  steps = schedule.update_steps(12)
  assert steps == [0, 3, 6, 9]
  a = _train(sj.sparsify(optax.adam(0.2), schedule), 12)
  b = _train(sj.sparsify(optax.adam(0.2), schedule, update='separate'), 12, set(steps))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # without the update program the mask stays, the shadow still trains
  c = _train(sj.sparsify(optax.adam(0.2), schedule, update='separate'), 4, set())
  np.testing.assert_array_equal(c[0][1].masks['w'], c[-1][1].masks['w'])
  assert not np.array_equal(c[0][1].schedule_state['w'], c[-1][1].schedule_state['w'])


def _conds(tx, **kw):
  params, batch = _regression()
  state = tx.init(params)
  def step(params, state):
    return tx.update(jax.grad(_loss)(params, batch), state, params, **kw)
  text = str(jax.make_jaxpr(step)(params, state))
  return text.count('cond[')


def test_a_mask_update_cond_only_where_the_mask_may_or_may_not_move():
  # (the exact top-k holds a cond of its own: every=3 adds one around it)
  every1, every3 = (sj.make_schedule('ste', sparsity=0.5, every=e) for e in (1, 3))
  assert _conds(sj.sparsify(optax.sgd(0.1), every3)) == 1 + _conds(
      sj.sparsify(optax.sgd(0.1), every1))
  assert _conds(sj.sparsify(optax.sgd(0.1), every3, update='separate'), update_masks=False) == 0


def test_only_ste_takes_the_straight_through_path():
  assert [n for n, c in sj.SCHEDULES.items()
          if issubclass(c, protocol.StraightThrough)] == ['ste']
  assert not issubclass(schedules.Schedule, protocol.StraightThrough)
  assert transform.ste_lib.STE is sj.STE


def test_settings_checked():
  with pytest.raises(schedules.ScheduleError, match='criterion'):
    sj.make_schedule('ste', sparsity=0.5, criterion='snip')
  with pytest.raises(schedules.ScheduleError, match='every'):
    sj.make_schedule('ste', sparsity=0.5, every=0)
  with pytest.raises(schedules.ScheduleError, match='sr_decay'):
    sj.make_schedule('ste', sparsity=0.5, sr_decay=-1.0)
  with pytest.raises(schedules.ScheduleError, match='sparsity=0'):
    sj.make_schedule('ste')
  assert sj.make_schedule('ste', pattern='nm').pattern == sj.NM(2, 4)
