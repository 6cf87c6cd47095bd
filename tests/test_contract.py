"""The contract every schedule passes, with several inner optimizers.

Pruned weights stay exactly 0.0; active counts are exactly the target per
leaf; jit and no-jit agree; the state keeps its structure, shapes and dtypes
across mask updates (so lax.cond and checkpoints work) and the step compiles
once; init works on ShapeDtypeStructs.
"""

import chex
import jax
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax.core import masks as masks_lib
from sparsejax.core import select
from conftest import dict_apply, dict_loss, dict_params

STEPS = 48
SPARSITY = 0.8


def _batch(i):
  x = jax.random.normal(jax.random.fold_in(jax.random.key(11), i), (16, 8))
  y = jax.random.randint(jax.random.fold_in(jax.random.key(12), i), (16,), 0, 4)
  return x, y


def _schedules():
  params = dict_params()
  fixed_masks = sj.prune(params, SPARSITY, allocation='erk')[1]
  batch = _batch(0)
  return {
      'dense': sj.make_schedule('dense'),
      'oneshot': sj.make_schedule('oneshot', sparsity=SPARSITY, at_step=5),
      'oneshot_nm': sj.make_schedule('oneshot', pattern=sj.NM(2, 4), at_step=3),
      'oneshot_rows': sj.make_schedule('oneshot', sparsity=0.5, pattern=sj.Structured(), at_step=3),
      'gradual': sj.make_schedule('gradual', sparsity=SPARSITY, start=0, end=40, every=10),
      'gradual_global': sj.make_schedule('gradual', sparsity=SPARSITY, start=10, end=40,
                                         every=10, allocation=sj.Allocation('global')),
      'gradual_snip': sj.make_schedule('gradual', sparsity=SPARSITY, end=30, every=10,
                                       criterion='snip', allocation='erk'),
      'fixed': sj.make_schedule('fixed', masks=fixed_masks),
      'at_init_snip': sj.at_init('snip', SPARSITY, loss_fn=dict_loss, batch=batch),
      'at_init_grasp': sj.at_init('grasp', SPARSITY, loss_fn=dict_loss, batch=batch),
      'at_init_synflow': sj.at_init('synflow', SPARSITY, apply_fn=dict_apply,
                                    input_shape=(1, 8), iterations=10),
      'at_init_random': sj.at_init('random', SPARSITY, seed=3),
      'set': sj.make_schedule('set', sparsity=SPARSITY, every=10, end=45),
      'rigl': sj.make_schedule('rigl', sparsity=SPARSITY, every=10, end=45),
      'rigl_nm': sj.make_schedule('rigl', pattern=sj.NM(2, 4), every=10, end=45),
      'set_block': sj.make_schedule('set', sparsity=0.7, pattern=sj.Block((4, 4)), every=10,
                                    end=45),
      'ste': sj.make_schedule('ste', sparsity=SPARSITY),
      'ste_sr_nm': sj.make_schedule('ste', pattern=sj.NM(2, 4), sr_decay=2e-4, every=3),
      'movement': sj.make_schedule('movement', sparsity=SPARSITY, start=0, end=40, every=10),
      'imp': sj.make_schedule('imp', every=12, rounds=3, prune_fraction=0.4, rewind_step=2,
                              allocation=sj.Allocation(scales={'head': 0.5})),
  }


SCHEDULES = _schedules()

OPTIMIZERS = {
    'adam': lambda: optax.adam(1e-2),
    'adamw': lambda: optax.adamw(1e-2, weight_decay=0.1),
    'sgd_nesterov': lambda: optax.sgd(5e-2, momentum=0.9, nesterov=True),
    'chain_inject': lambda: optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.inject_hyperparams(optax.adam)(
            learning_rate=optax.cosine_decay_schedule(1e-2, STEPS))),
}


def expected_counts(schedule, masks, params):
  """Active weights per leaf that the schedule must end with."""
  totals = masks_lib.count_total(masks)
  if isinstance(schedule, sj.FixedMask):
    return {p: int(c) for p, c in sj.count_active(schedule.masks).items()}
  if isinstance(schedule, sj.IMP):
    out = {}
    for p, n in totals.items():
      rate = schedule.allocation.layer_sparsities({p: shapes_of(masks)[p]},
                                                  schedule.prune_fraction)[p]
      k = n
      for _ in range(schedule.rounds):
        k = max(k - round(rate * k), 1)
      out[p] = k
    return out
  if isinstance(schedule.pattern, sj.NM):
    return {p: n * schedule.pattern.n // schedule.pattern.m for p, n in totals.items()}
  shapes = {p: tuple(m.shape) for p, m in zip(totals, jax.tree.leaves(masks))}
  per_leaf = schedule.allocation.layer_sparsities(shapes, schedule.sparsity)
  if isinstance(schedule.pattern, sj.Block):
    size = int(np.prod(schedule.pattern.block))
    return {p: int(select.keep_count(totals[p] // size, s)) * size for p, s in per_leaf.items()}
  if isinstance(schedule.pattern, sj.Structured):
    return {p: int(select.keep_count(shapes[p][-1], s)) * totals[p] // shapes[p][-1]
            for p, s in per_leaf.items()}
  if schedule.allocation.is_global:
    n = sum(totals.values())
    return {'total': int(select.keep_count(n, schedule.sparsity))}
  return {p: int(select.keep_count(totals[p], s)) for p, s in per_leaf.items()}


def shapes_of(masks):
  return {p: tuple(m.shape) for p, m in zip(masks_lib.count_total(masks),
                                            jax.tree.leaves(masks))}


def make_step(tx):
  def step(params, state, batch):
    loss, grads = jax.value_and_grad(dict_loss)(params, batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss
  return step


def run(tx, steps=STEPS, jit=True, traced=None):
  params = dict_params()
  state = tx.init(params)
  step = make_step(tx)
  if traced is not None:
    step = traced(step)
  if jit:
    step = jax.jit(step)
  history = []
  for i in range(steps):
    params, state, loss = step(params, state, _batch(i))
    history.append(state)
  return params, state, history


def assert_pruned_exactly_zero(params, masks):
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(masks, is_leaf=lambda x: x is None)):
    if m is not None:
      pruned = np.asarray(p)[~np.asarray(m)]
      assert np.all(pruned == 0.0), f'{np.count_nonzero(pruned)} pruned weights are non-zero'


def signature(tree):
  return jax.tree.structure(tree), [(x.shape, x.dtype) for x in jax.tree.leaves(tree)]


def _pairwise():
  """Every schedule with every optimizer; the default suite takes two
  optimizers per schedule, in rotation, so each optimizer meets ten
  schedules and each schedule two optimizers (a full contract run is a
  compile of about 4 s); the other half runs with the extended checks."""
  opts = sorted(OPTIMIZERS)
  out = []
  for i, name in enumerate(sorted(SCHEDULES)):
    default = {opts[i % len(opts)], opts[(i + 1) % len(opts)]}
    out += [pytest.param(name, o, marks=() if o in default else pytest.mark.extended)
            for o in opts]
  return out


@pytest.mark.parametrize('name,opt', _pairwise())
def test_contract(name, opt):
  schedule = SCHEDULES[name]
  tx = sj.sparsify(OPTIMIZERS[opt](), schedule)
  chex.clear_trace_counter()
  params, state, history = run(tx, traced=chex.assert_max_traces(n=1))
  masks = sj.get_masks(state)
  assert_pruned_exactly_zero(params, masks)
  counts = {p: int(c) for p, c in sj.count_active(masks).items()}
  expected = expected_counts(schedule, masks, params)
  if 'total' in expected:
    counts = {'total': sum(counts.values())}
  assert counts == expected
  first = signature(jax.eval_shape(tx.init, dict_params()))
  for s in history:
    assert signature(s) == first
  for p in jax.tree.leaves(params):
    assert np.all(np.isfinite(np.asarray(p)))


# Un-jitted runs compile each operation on its own (10-37 s for some). The
# default suite keeps one schedule of each kind of update (threshold,
# criterion at init, fixed, drop/grow, straight-through, movement, rounds);
# the variants of the same code paths run with the extended checks.
SLOW_UNJITTED = ('at_init_grasp', 'set_block', 'at_init_random', 'at_init_synflow',
                 'oneshot_rows', 'gradual', 'rigl_nm', 'ste_sr_nm')


@pytest.mark.parametrize('name', [pytest.param(n, marks=pytest.mark.extended)
                                  if n in SLOW_UNJITTED else n for n in sorted(SCHEDULES)])
def test_jit_and_no_jit_agree(name):
  # SGD with momentum: Adam's m/sqrt(v) magnifies XLA's fusion rounding (1e-3
  # after 12 plain dense steps), which would hide real disagreements.
  # Schedules that fix the mask at init need few steps; the others cross a
  # mask update (steps 5 and 10).
  steps = 4 if isinstance(SCHEDULES[name], (sj.AtInit, sj.FixedMask)) else 12
  tx = sj.sparsify(optax.sgd(5e-2, momentum=0.9), SCHEDULES[name])
  p_jit, s_jit, _ = run(tx, steps=steps, jit=True)
  with jax.disable_jit():
    p_eager, s_eager, _ = run(tx, steps=steps, jit=False)
  chex.assert_trees_all_close(p_jit, p_eager, atol=1e-5, rtol=1e-5)
  chex.assert_trees_all_equal(sj.get_masks(s_jit), sj.get_masks(s_eager))


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_init_on_shape_dtype_structs(name):
  tx = sj.sparsify(optax.adamw(1e-2, weight_decay=1e-4), SCHEDULES[name])
  params = dict_params()
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
  assert signature(jax.eval_shape(tx.init, abstract)) == signature(tx.init(params))


def test_pruned_weights_stay_zero_before_and_after_updates():
  """Check every step, not only the last, through a mask change."""
  tx = sj.sparsify(optax.adamw(1e-2, weight_decay=0.5), SCHEDULES['rigl'])
  params, state = dict_params(), None
  state = tx.init(params)
  params = sj.masked_params(params, state)
  step = jax.jit(make_step(tx))
  for i in range(25):
    params, state, _ = step(params, state, _batch(i))
    assert_pruned_exactly_zero(params, sj.get_masks(state))


def test_get_masks_in_nested_state():
  tx = optax.chain(optax.clip(1.0), sj.sparsify(optax.adam(1e-3), SCHEDULES['oneshot']))
  state = tx.init(dict_params())
  masks = sj.get_masks(state)
  assert set(sj.count_active(masks)) == {'encoder/w1', 'encoder/w2', 'head/w'}
  with pytest.raises(ValueError, match='found 0'):
    sj.get_masks(optax.adam(1e-3).init(dict_params()))


def test_update_without_params_is_an_error():
  tx = sj.sparsify(optax.sgd(0.1), SCHEDULES['dense'])
  state = tx.init(dict_params())
  with pytest.raises(ValueError, match='params'):
    tx.update(dict_params(), state)


@pytest.mark.parametrize('jit', [False, True])
def test_dense_schedule_equals_plain_optimizer(jit):
  """Eager: bitwise equal. Jitted: XLA may fuse differently (1 ulp here)."""
  plain = optax.adam(1e-2)
  p1, _, _ = run(sj.sparsify(plain, SCHEDULES['dense']), steps=4, jit=jit)
  params = dict_params()
  state = plain.init(params)
  step = jax.jit(make_step(plain)) if jit else make_step(plain)
  for i in range(4):
    params, state, _ = step(params, state, _batch(i))
  if jit:
    chex.assert_trees_all_close(p1, params, atol=1e-6, rtol=1e-6)
  else:
    chex.assert_trees_all_equal(p1, params)
