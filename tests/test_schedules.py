"""Hand-computed checks of the schedules: RigL/SET drop and grow, the cubic
schedule, the IMP remaining-weight sequence, moment resets, bad names."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.core import dynamic, schedules

MASK = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
W = jnp.array([0.5, -0.1, 2.0, 0.3, 0.0, 0.0, 0.0, 0.0])
G = jnp.array([0.0, 0.1, 0.0, 0.2, 0.2, -3.0, 1.0, 0.05])


def test_rigl_drop_grow_by_hand():
  # k = 4, drop 2: survivors are |w| = 2.0 (2) and 0.5 (0); growth takes the
  # largest |g| outside the survivors: -3.0 (5) and 1.0 (6).
  new = dynamic.drop_grow(MASK, jnp.abs(W), jnp.abs(G), 0.5)
  np.testing.assert_array_equal(new, [1, 0, 1, 0, 0, 1, 1, 0])


def test_rigl_grow_ties_go_to_lower_index_and_can_regrow_dropped():
  # drop 3 of 4 (keep index 2); grow 3 of |g| = [0, .1, 0, .2, .2, 3, 1, .05]
  # outside {2}: 3.0 (5), 1.0 (6), then 0.2 ties at 3 and 4 -> 3, a dropped weight.
  new = dynamic.drop_grow(MASK, jnp.abs(W), jnp.abs(G), 0.75)
  np.testing.assert_array_equal(new, [0, 0, 1, 1, 0, 1, 1, 0])


def test_drop_fraction_zero_keeps_mask():
  np.testing.assert_array_equal(dynamic.drop_grow(MASK, jnp.abs(W), jnp.abs(G), 0.0), MASK)


def test_rigl_update_through_schedule():
  rigl = sj.RigL(sparsity=0.5, allocation=sj.Allocation('uniform'), drop_fraction=0.5,
                 decay='constant', every=10, end=100)
  masks = {'w': MASK.reshape(2, 4), 'b': None}
  params = {'w': W.reshape(2, 4), 'b': jnp.ones(3)}
  grads = {'w': G.reshape(2, 4), 'b': jnp.ones(3)}
  new, _ = rigl.update(masks, params, grads, 10, ())
  np.testing.assert_array_equal(new['w'].ravel(), [1, 0, 1, 0, 0, 1, 1, 0])
  assert new['b'] is None


def test_rigl_cosine_drop_fraction_and_update_steps():
  rigl = sj.RigL(sparsity=0.9, end=1000, every=100)
  np.testing.assert_allclose(rigl.drop_fraction_at(0), 0.3)
  np.testing.assert_allclose(rigl.drop_fraction_at(500), 0.15, rtol=1e-6)
  np.testing.assert_allclose(rigl.drop_fraction_at(1000), 0.0, atol=1e-7)
  updates = [s for s in range(0, 1201, 50) if bool(rigl.should_update(s))]
  assert updates == list(range(100, 1000, 100))


def test_set_random_growth_exact_and_seeded():
  set_ = sj.SET(sparsity=0.5, every=10, end=100, drop_fraction=0.5, seed=1)
  params = {'w': jax.random.normal(jax.random.key(0), (16, 16))}
  masks, _ = set_.init(params)
  grads = {'w': jnp.zeros((16, 16))}
  new1, _ = set_.update(masks, params, grads, 10, ())
  new2, _ = set_.update(masks, params, grads, 10, ())
  new3, _ = set_.update(masks, params, grads, 20, ())
  m, n = np.asarray(masks['w']), np.asarray(new1['w'])
  assert n.sum() == m.sum() == 128
  # The 64 largest |w| among the active weights survive.
  kept = np.asarray(sj.topk_mask(jnp.abs(params['w']), 64, masks['w']))
  assert np.all(n[kept])
  np.testing.assert_array_equal(new1['w'], new2['w'])
  assert not np.array_equal(new1['w'], new3['w'])


def test_grown_weights_start_at_zero_and_moments_reset():
  """One RigL update inside sparsify, checked against the optimizer by hand."""
  params = {'w': jax.random.normal(jax.random.key(0), (8, 8))}
  rigl = sj.RigL(sparsity=0.5, allocation=sj.Allocation('uniform'), every=2, end=100)
  lr = 0.1
  tx = sj.sparsify(optax.sgd(lr), rigl)
  state = tx.init(params)
  params = sj.masked_params(params, state)
  grads = {'w': jax.random.normal(jax.random.key(1), (8, 8))}
  for step in range(3):   # the update happens at step 2
    old_mask = sj.get_masks(state)['w']
    before = params
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
  new_mask = sj.get_masks(state)['w']
  grown = np.asarray(new_mask & ~old_mask)
  assert grown.sum() > 0
  assert np.all(np.asarray(before['w'])[grown] == 0.0)
  np.testing.assert_array_equal(np.asarray(params['w'])[grown], -lr * np.asarray(grads['w'])[grown])
  assert np.all(np.asarray(params['w'])[~np.asarray(new_mask)] == 0.0)

  # With Adam: moments of newly pruned weights are zero, grown ones restart.
  tx = sj.sparsify(optax.adam(1e-2, b1=0.9), rigl)
  p = {'w': jax.random.normal(jax.random.key(0), (8, 8))}
  state = tx.init(p)
  p = sj.masked_params(p, state)
  for step in range(3):
    old_mask = sj.get_masks(state)['w']
    updates, state = tx.update(grads, state, p)
    p = optax.apply_updates(p, updates)
  new_mask = sj.get_masks(state)['w']
  mu = np.asarray(state.inner_state[0].mu['w'])
  pruned_now = np.asarray(old_mask & ~new_mask)
  grown = np.asarray(new_mask & ~old_mask)
  assert pruned_now.sum() > 0 and grown.sum() > 0
  assert np.all(mu[pruned_now] == 0.0)
  np.testing.assert_allclose(mu[grown], 0.1 * np.asarray(grads['w'])[grown], rtol=1e-6)


def test_cubic_schedule_values():
  g = sj.Gradual(sparsity=0.9, start=100, end=1100, every=100)
  for step, expected in [(0, 0.0), (100, 0.0), (350, 0.9 * (1 - 0.75 ** 3)),
                         (600, 0.9 * (1 - 0.5 ** 3)), (1100, 0.9), (5000, 0.9)]:
    np.testing.assert_allclose(float(g.sparsity_at(step)), expected, rtol=1e-6, atol=1e-7)
  steps = [s for s in range(0, 1300, 50) if bool(g.should_update(s))]
  assert steps == list(range(100, 1101, 100))
  off_grid = sj.Gradual(sparsity=0.9, start=0, end=250, every=100)
  assert [s for s in range(300) if bool(off_grid.should_update(s))] == [0, 100, 200, 250]


def test_gradual_counts_follow_curve_per_leaf():
  params = {'a': jax.random.normal(jax.random.key(0), (40, 50)),
            'b': jax.random.normal(jax.random.key(1), (50, 10))}
  g = sj.Gradual(sparsity=0.8, start=0, end=100, every=50,
                 allocation=sj.Allocation(scales={'b': 0.5}))
  masks, _ = g.init(params)
  masks, _ = g.update(masks, params, None, 50, ())
  f = 1 - 0.5 ** 3
  counts = {k: int(v) for k, v in sj.count_active(masks).items()}
  assert counts == {'a': 2000 - round(0.8 * f * 2000), 'b': 500 - round(0.4 * f * 500)}


LENET = {'fc1': (784, 300), 'fc2': (300, 100), 'out': (100, 10)}
PAPER_PERCENT = [100, 80.0, 64.1, 51.3, 41.1, 32.9, 26.3, 21.1, 16.9, 13.5, 10.8, 8.7,
                 7.0, 5.6, 4.5, 3.6, 2.9, 2.3, 1.9]


def test_imp_remaining_sequence_lenet():
  """Frankle & Carbin 2019: 20% per round, output layer at 10%."""
  keys = jax.random.split(jax.random.key(0), 3)
  params = {k: jax.random.normal(key, s) for (k, s), key in zip(LENET.items(), keys)}
  masks = sj.dense_masks(params)
  prune = jax.jit(functools.partial(sj.prune_remaining, fraction=0.2,
                                    allocation=sj.Allocation(scales={'out': 0.5})))
  got = [100.0]
  for _ in range(18):
    new = prune(params, masks)
    assert all(np.all(~np.asarray(new[k]) | np.asarray(masks[k])) for k in LENET)  # no revival
    masks = new
    got.append(round(100 * float(sj.overall_density(masks)), 1))
  assert got == PAPER_PERCENT


def test_imp_global_prunes_fraction_of_all_remaining():
  params = {'a': jax.random.normal(jax.random.key(0), (30, 30)),
            'b': 0.1 * jax.random.normal(jax.random.key(1), (30, 10))}
  masks = sj.prune_remaining(params, sj.dense_masks(params), 0.5, allocation='global')
  assert int(sj.total_active(masks)) == 600
  masks = sj.prune_remaining(params, masks, 0.5, allocation='global')
  assert int(sj.total_active(masks)) == 300


def test_rewind_under_mask():
  params = {'w': jnp.arange(4.0).reshape(2, 2) + 1, 'b': jnp.ones(2)}
  saved = {'w': jnp.full((2, 2), 7.0), 'b': jnp.full((2,), 3.0)}
  masks = {'w': jnp.array([[True, False], [False, True]]), 'b': None}
  out = sj.rewind(params, saved, masks)
  np.testing.assert_array_equal(out['w'], [[7.0, 0.0], [0.0, 7.0]])
  np.testing.assert_array_equal(out['b'], [3.0, 3.0])


def test_fixed_mask_from_zeros_of_checkpoint():
  pruned, masks = sj.prune({'w': jax.random.normal(jax.random.key(0), (10, 10))}, 0.7)
  derived, _ = sj.FixedMask().init(pruned)
  np.testing.assert_array_equal(derived['w'], masks['w'])


def test_bad_names_and_settings():
  with pytest.raises(ValueError, match="'lottery'"):
    sj.make_schedule('lottery')
  with pytest.raises(ValueError, match="'sparsty'"):
    sj.make_schedule('gradual', sparsty=0.9)
  with pytest.raises(ValueError, match="'l0'"):
    sj.make_schedule('oneshot', criterion='l0')
  with pytest.raises(ValueError, match='global'):
    sj.make_schedule('rigl', allocation=sj.Allocation('global'))
  with pytest.raises(ValueError, match='start < end'):
    sj.make_schedule('gradual', start=10, end=5)
  with pytest.raises(ValueError, match='mnist'):
    sj.at_init('mnist', 0.5)
  with pytest.raises(ValueError, match='loss_fn'):
    sj.at_init('snip', 0.5)


def test_nm_not_dividing_axis_is_named_at_init():
  params = {'enc': {'w': jnp.ones((6, 8))}}
  tx = sj.sparsify(optax.sgd(0.1), sj.make_schedule('oneshot', pattern=sj.NM(2, 4)))
  with pytest.raises(ValueError, match="M=4 does not divide.*'enc/w'"):
    tx.init(params)
  with pytest.raises(ValueError, match="'enc/w'"):
    sj.prune(params, 0.5, pattern=sj.NM(2, 4))


@pytest.mark.parametrize('name', ['rigl', 'set', 'oneshot', 'gradual'])
def test_nm_pattern_with_another_sparsity_is_an_error(name):
  """2:4 keeps half of every group: sparsity 0.9 with it would train at 0.5."""
  with pytest.raises(schedules.ScheduleError, match=r'sparsity=0.9 with pattern 2:4.*sparsity 0.5'):
    sj.make_schedule(name, sparsity=0.9, pattern=sj.NM(2, 4))
  for ok in (0.0, 0.5):
    assert sj.make_schedule(name, sparsity=ok, pattern=sj.NM(2, 4)).pattern == sj.NM(2, 4)
  assert sj.make_schedule(name, sparsity=0.75, pattern=sj.NM(1, 4)).sparsity == 0.75


def test_mask_with_wrong_shape_rejected_by_fixed_schedule():
  params = {'w': jnp.ones((4, 4)), 'b': jnp.ones(4)}
  tx = sj.sparsify(optax.sgd(0.1), sj.FixedMask(masks={'w': jnp.ones((4, 3), bool), 'b': None}))
  with pytest.raises(ValueError, match="'w' has shape"):
    tx.init(params)


def test_imp_schedule_rounds_rewind_and_reset_by_hand():
  """IMP inside one run: every 3 steps prune half of what remains, rewind to
  the step-0 params under the new mask, restart Adam (count and moments)."""
  params = {'w': jax.random.normal(jax.random.key(0), (4, 6)), 'b': jnp.ones(6)}
  imp = sj.IMP(every=3, rounds=2, prune_fraction=0.5)
  lr = optax.linear_schedule(1e-2, 0.0, 3)
  tx = sj.sparsify(optax.inject_hyperparams(optax.adam)(learning_rate=lr), imp)
  state = tx.init(params)
  init = params
  grads = {'w': jnp.ones((4, 6)), 'b': jnp.ones(6)}
  counts = []
  for step in range(7):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    counts.append(int(sj.count_active(sj.get_masks(state))['w']))
    inner = state.inner_state          # InjectHyperparamsState(count, hyperparams, adam)
    if step in (3, 6):    # a round: rewound and restarted
      m = np.asarray(sj.get_masks(state)['w'])
      np.testing.assert_array_equal(np.asarray(params['w']), np.where(m, init['w'], 0.0))
      np.testing.assert_array_equal(np.asarray(params['b']), np.asarray(init['b']))
      assert int(inner.count) == 0
      assert float(jnp.abs(inner.inner_state[0].mu['w']).max()) == 0.0
    else:
      assert int(inner.count) > 0
  assert counts == [24, 24, 24, 12, 12, 12, 6]


def test_imp_rewinds_to_step_k_and_restarts_learning_rate():
  params = {'w': jax.random.normal(jax.random.key(1), (8, 8))}
  imp = sj.IMP(every=5, rounds=1, prune_fraction=0.25, rewind_step=2)
  tx = sj.sparsify(optax.sgd(0.1), imp)
  state = tx.init(params)
  saved = None
  for step in range(6):
    if step == 2:
      saved = params
    g = {'w': jax.random.normal(jax.random.fold_in(jax.random.key(2), step), (8, 8))}
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
  m = np.asarray(sj.get_masks(state)['w'])
  assert m.sum() == 64 - 16
  np.testing.assert_array_equal(np.asarray(params['w']), np.where(m, saved['w'], 0.0))


def test_imp_settings_checked():
  with pytest.raises(ValueError, match='leave sparsity at 0'):
    sj.make_schedule('imp', sparsity=0.9)
  with pytest.raises(ValueError, match='prune_fraction'):
    sj.make_schedule('imp', prune_fraction=1.5)
  with pytest.raises(ValueError, match="'erk'"):
    sj.make_schedule('imp', allocation='erk')


def test_same_counts_control_masks():
  params = {'a': jax.random.normal(jax.random.key(0), (10, 10)),
            'b': jax.random.normal(jax.random.key(1), (10, 4))}
  ticket = sj.prune_remaining(params, sj.dense_masks(params), 0.7,
                              allocation=sj.Allocation(scales={'b': 0.5}))
  rand = sj.same_counts(sj.get_criterion('random')(params, None, jax.random.key(3)), ticket)
  assert {k: int(v) for k, v in sj.count_active(rand).items()} == \
      {k: int(v) for k, v in sj.count_active(ticket).items()}
  assert not np.array_equal(np.asarray(rand['a']), np.asarray(ticket['a']))
  mag = sj.same_counts(jax.tree.map(jnp.abs, params), ticket)
  np.testing.assert_array_equal(mag['a'], ticket['a'])   # same criterion, same counts


def test_set_grows_uniformly_among_inactive_weights():
  """SET's random growth (hashed keys, select.random_keys) picks from every
  weight that was inactive after the drop, none more often than chance
  allows, and never from the survivors."""
  set_ = sj.SET(sparsity=0.75, every=1, end=10_000, drop_fraction=0.25, seed=2)
  params = {'w': jax.random.normal(jax.random.key(0), (32, 32))}
  masks, _ = set_.init(params)
  zero = {'w': jnp.zeros((32, 32))}
  update = jax.jit(lambda m, s: set_.update(m, params, zero, s, ())[0])
  survivors = np.asarray(sj.topk_mask(jnp.abs(params['w']), 192, masks['w']))
  grown = np.zeros((32, 32))
  for step in range(1, 201):
    new = np.asarray(update(masks, step)['w'])
    assert new.sum() == 256 and np.all(new[survivors])
    grown += new & ~survivors
  # 64 grown a step out of the 832 weights not among the survivors: 15.4 each
  counts = grown[~survivors]
  assert counts.size == 832 and abs(counts.mean() - 200 * 64 / 832) < 1e-9
  assert counts.min() >= 3 and counts.max() <= 32
