"""Movement pruning (Sanh et al. 2020): scores -sum_t g_t * w_t accumulate on
every step, in both update modes; 'hard' keeps the exact top-k by score on the
cubic schedule, 'soft' exactly score > threshold."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.core import schedules
from conftest import dict_loss, dict_params

W0 = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], np.float32)
GRADS = [np.array([[0.5, 1.0, -2.0], [4.0, -0.5, 1.0]], np.float32),
         np.array([[-1.0, 0.25, 0.5], [2.0, 1.0, -0.5]], np.float32),
         np.array([[0.125, -1.0, 1.0], [-0.5, 2.0, 0.25]], np.float32)]


HARD = dict(sparsity=0.5, start=0, end=16, every=4)
SOFT = dict(variant='soft', threshold=0.0, start=4, end=16, every=6)


def _batch(i):
  x = jax.random.normal(jax.random.fold_in(jax.random.key(11), i), (16, 8))
  y = jax.random.randint(jax.random.fold_in(jax.random.key(12), i), (16,), 0, 4)
  return x, y


def _tiny(w):
  return {'w': jnp.asarray(w), 'b': jnp.zeros((3,), jnp.float32)}


@pytest.mark.parametrize('mode, flag', [('in_step', None), ('separate', False)])
def test_scores_after_three_steps_match_numpy(mode, flag):
  """sparsify runs the hook on every step (the plain 'separate' step too), with
  the dense gradient and the params the step starts from. (Soft: its mask
  update is cheap to trace; the hook is the same for both variants.)"""
  schedule = sj.make_schedule('movement', variant='soft', start=10, end=20, every=5)
  tx = sj.sparsify(optax.sgd(0.5), schedule, update=mode)
  params = _tiny(W0)
  state = tx.init(params)
  assert state.schedule_state['b'] is None   # scores for prunable leaves only
  kw = {} if flag is None else {'update_masks': flag}
  want, w = np.zeros_like(W0), W0.copy()
  for g in GRADS:
    want = want - g * w
    w = w - np.float32(0.5) * g
    updates, state = tx.update(_tiny(g), state, params, **kw)
    params = optax.apply_updates(params, updates)
  np.testing.assert_allclose(np.asarray(state.schedule_state['w']), want, rtol=1e-6)
  assert state.schedule_state['w'].dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(params['w']), w, rtol=1e-6)


def test_default_hook_is_the_identity():
  state = {'a': jnp.ones(3)}
  assert schedules.Schedule().accumulate(state, None, None, 0) is state
  jaxpr = jax.make_jaxpr(lambda s: sj.make_schedule('gradual', sparsity=0.5)
                         .accumulate(s, s, s, 0))(state)
  assert not jaxpr.eqns


def test_plain_separate_step_has_no_cond():
  schedule = sj.make_schedule('movement', **HARD)
  tx = sj.sparsify(optax.adam(1e-2), schedule, update='separate')
  params = dict_params()
  state = tx.init(params)
  step = functools.partial(_step_fn(tx).__wrapped__, update_masks=False)
  eqns = jax.make_jaxpr(step)(params, state, _batch(0)).jaxpr.eqns
  assert not any(e.primitive.name == 'cond' for e in eqns)


def test_hard_keeps_exact_top_k_of_all_weights():
  schedule = sj.make_schedule('movement', sparsity=0.6, start=0, end=10, every=5)
  params = {'w': jnp.zeros((4, 5)), 'b': jnp.zeros((5,))}
  masks, _ = schedule.init(params)
  scores = np.random.default_rng(0).permutation(20).astype(np.float32).reshape(4, 5)
  old = np.ones((4, 5), bool)
  old.flat[np.argmax(scores)] = False       # pruned, but the best score: it comes back
  masks = {'w': jnp.asarray(old), 'b': None}
  for step, sparsity in ((10, 0.6), (5, float(schedule.sparsity_at(5)))):
    new, _ = schedule.update(masks, params, params, step, {'w': jnp.asarray(scores), 'b': None})
    k = 20 - round(sparsity * 20)
    want = np.zeros(20, bool)
    want[np.argsort(-scores.ravel())[:k]] = True
    assert new['b'] is None and int(np.sum(new['w'])) == k
    np.testing.assert_array_equal(np.asarray(new['w']), want.reshape(4, 5))
  assert 0 < float(schedule.sparsity_at(5)) < 0.6


def test_soft_keeps_exactly_score_above_threshold():
  schedule = sj.make_schedule('movement', variant='soft', threshold=0.25, end=10, every=5)
  params = {'w': jnp.zeros((3, 4)), 'b': jnp.zeros((4,))}
  masks, _ = schedule.init(params)
  scores = np.array([[0.25, 0.26, -1.0, 3.0], [0.0, 0.2, 0.5, 0.25], [1.0, -0.3, 0.3, 0.1]],
                    np.float32)
  new, state = schedule.update(masks, params, params, 5, {'w': jnp.asarray(scores), 'b': None})
  np.testing.assert_array_equal(np.asarray(new['w']), scores > 0.25)
  assert new['b'] is None and state['w'] is not None


def _step_fn(tx):
  @functools.partial(jax.jit, static_argnames='update_masks')
  def step(params, state, batch, update_masks=None):
    grads = jax.grad(dict_loss)(params, batch)
    flag = {} if update_masks is None else {'update_masks': update_masks}
    updates, state = tx.update(grads, state, params, **flag)
    return optax.apply_updates(params, updates), state
  return step


def _train(tx, steps, update_steps=None, each=None):
  params = dict_params()
  state = tx.init(params)
  params = sj.masked_params(params, state)
  step, history = _step_fn(tx), []
  for i in range(steps):
    flag = None if update_steps is None else i in update_steps
    params, state = step(params, state, _batch(i), update_masks=flag)
    history.append(jax.device_get(sj.get_masks(state)))
    if each:
      each(params, state)
  return params, state, history


def _pruned_values(params, masks):
  return [np.asarray(p)[~np.asarray(m)] for p, m in
          zip(jax.tree.leaves(params), jax.tree.leaves(masks, is_leaf=lambda x: x is None))
          if m is not None]


@functools.cache
def _in_step_run(name):
  """20 jitted in-step adam steps (shared by two tests: one compile), with the
  masks and scores after every step."""
  tx = sj.sparsify(optax.adam(1e-2), sj.make_schedule('movement', **{'hard': HARD,
                                                                     'soft': SOFT}[name]))
  seen = []

  def record(params, state):
    masks = sj.get_masks(state)
    seen.append((_pruned_values(params, masks), jax.device_get(state.schedule_state)))
  return _train(tx, 20, each=record) + (seen,)


def test_pruned_weights_exactly_zero_with_adam_and_their_scores_frozen():
  params, state, history, seen = _in_step_run('hard')
  assert all(np.all(v == 0.0) for pruned, _ in seen for v in pruned)   # after every step
  totals = sj.count_active(sj.dense_masks(params))
  assert sj.count_active(sj.get_masks(state)) == {
      p: int(n - round(0.5 * n)) for p, n in totals.items()}
  # after the last update (step 16) pruned weights sit at 0.0: their scores stop moving
  (_, s17), (_, s18) = seen[17], seen[18]
  for m, a, b in zip(jax.tree.leaves(history[17]), jax.tree.leaves(s17), jax.tree.leaves(s18)):
    np.testing.assert_array_equal(a[~m], b[~m])
    assert not np.array_equal(a[m], b[m])


@pytest.mark.parametrize('name', ['hard', 'soft'])
def test_separate_update_is_bitwise_in_step(name):
  schedule = sj.make_schedule('movement', **{'hard': HARD, 'soft': SOFT}[name])
  steps = schedule.update_steps(20)
  p1, s1, h1, _ = _in_step_run(name)
  p2, s2, h2 = _train(sj.sparsify(optax.adam(1e-2), schedule, update='separate'), 20,
                      set(steps))
  moved = [i for i in range(1, 20) if not all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(h1[i]), jax.tree.leaves(h1[i - 1])))]
  assert moved and set(moved) <= set(steps)
  for a, b in zip(jax.tree.leaves((h1, p1, s1)), jax.tree.leaves((h2, p2, s2))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  if name == 'soft':
    active = sum(sj.count_active(h1[-1]).values())
    assert 0 < active < sum(np.size(m) for m in jax.tree.leaves(h1[-1]))


def test_config_names_it_and_bad_settings_raise():
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'pruning.schedule': 'movement', 'pruning.variant': 'soft', 'pruning.threshold': 0.01,
      'pruning.end': 0.5})
  s = config_lib.to_settings(c)
  built = experiment.build_schedule(s.pruning, s.seed)
  assert built == sj.Movement(variant='soft', threshold=0.01, end=0.5)
  assert built.for_run(100).end == 50 and built.describe()['criterion'] == 'movement'
  with pytest.raises(schedules.ScheduleError, match='variant'):
    sj.Movement(variant='medium')
  with pytest.raises(schedules.ScheduleError, match='outcome'):
    sj.Movement(variant='soft', sparsity=0.5)
  with pytest.raises(schedules.ScheduleError, match='unstructured'):
    sj.Movement(variant='soft', pattern=sj.NM(2, 4))
  with pytest.raises(schedules.ScheduleError, match='criterion'):
    sj.Movement(sparsity=0.5, criterion='magnitude')
  with pytest.raises(schedules.ScheduleError, match='never prune'):
    sj.Movement(variant='soft', start=10, end=20).for_run(10)
