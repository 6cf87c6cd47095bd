"""The slim schedule protocol: `protocol.SparsitySchedule`, the capability
mixins, the rewinding / straight-through wrappers composed by `sparsify`, and
the deprecated capability defaults every `Schedule` still answers."""

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.core import (at_init, compat, imp, protocol, registry, rewinding, schedules,
                            ste, transform)


def _params():
  k1, k2 = jax.random.split(jax.random.key(0))
  return {'w1': jax.random.normal(k1, (8, 16)), 'b1': jnp.zeros(16),
          'w2': jax.random.normal(k2, (16, 4))}


def _grads(params, i):
  return jax.tree.map(lambda p: jnp.cos(p * (i + 1)), params)


def _train(tx, params, steps):
  state = tx.init(params)
  params = transform.masked_params(params, state)
  step = jax.jit(tx.update)
  for i in range(steps):
    updates, state = step(_grads(params, i), state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def test_sparsify_is_short():
  lines, _ = inspect.getsourcelines(transform.sparsify)
  assert len(lines) <= 70, f'sparsify is {len(lines)} lines'


def test_schedule_base_carries_no_capability_methods():
  own = vars(schedules.Schedule)
  for name in ('rewinds', 'should_rewind', 'rewind_target', 'lr_step', 'restart_period',
               'straight_through', 'program_key', 'init_data', 'with_init_data',
               'needs_binding', 'bind'):
    assert name not in own, name
    assert hasattr(compat.CapabilityDefaults, name), name   # deprecated, one release


CAPABILITIES = {'imp': {protocol.Rewinding}, 'ste': {protocol.StraightThrough},
                'at_init': {protocol.Bindable}, 'dense': {protocol.SharesPrograms},
                'fixed': {protocol.SharesPrograms}}


@pytest.mark.parametrize('name', sorted(registry.SCHEDULES))
def test_builtin_schedules_speak_the_protocol(name):
  cls = registry.SCHEDULES[name]
  assert issubclass(cls, schedules.Schedule)
  for method in ('init', 'should_update', 'update', 'accumulate'):
    assert callable(getattr(cls, method))
  has = {c for c in (protocol.Rewinding, protocol.StraightThrough, protocol.Bindable,
                     protocol.SharesPrograms) if issubclass(cls, c)}
  assert has == CAPABILITIES.get(name, set())


def test_deprecated_flags_follow_the_capabilities():
  assert imp.IMP.rewinds and not schedules.OneShot.rewinds
  assert ste.STE.straight_through and not schedules.Schedule.straight_through
  s = schedules.OneShot(0.5)
  assert s.program_key() is None and s.bind(loss_fn=None) is s and not s.needs_binding
  assert protocol.is_rewinding(imp.IMP()) and not protocol.is_rewinding(s)
  assert protocol.is_straight_through(ste.STE(0.5)) and not protocol.is_straight_through(s)


class _EveryOther:
  """A schedule with the protocol only (no Schedule base): prunes the
  smallest half of each matrix on even steps."""

  def init(self, params, rule):
    masks = jax.tree.map(lambda p: jnp.ones(p.shape, bool) if p.ndim >= 2 else None, params)
    return masks, jnp.zeros([], jnp.int32)

  def should_update(self, step):
    return step % 2 == 0

  def update(self, masks, params, grads, step, state):
    del grads, step
    new = jax.tree.map(lambda p, m: None if m is None else
                       jnp.abs(p) >= jnp.median(jnp.abs(p)), params, masks)
    return new, state + 1

  def accumulate(self, state, params, grads, step):
    return state


def test_a_protocol_only_schedule_trains():
  sched = _EveryOther()
  assert isinstance(sched, protocol.SparsitySchedule)
  assert not protocol.is_rewinding(sched) and protocol.program_key(sched) is None
  assert protocol.bind(sched, batch=None) is sched and protocol.lr_step(sched, 7) == 7
  assert protocol.restart_period(sched) is None and protocol.init_data(sched) is None
  params, state = _train(transform.sparsify(optax.adam(1e-2), sched), _params(), 4)
  masks = transform.get_masks(state)
  assert int(state.schedule_state) == 2
  assert bool(jnp.all(jnp.where(masks['w1'], True, params['w1'] == 0.0)))


@dataclasses.dataclass(frozen=True)
class _LegacyRewind(schedules.Schedule):
  """A user's subclass in the older style: the flag and two overrides."""
  rewinds = True

  def should_rewind(self, step):
    return step == 2

  def rewind_target(self, masks, state):
    return jax.tree.map(jnp.zeros_like, state)

  def init(self, params, rule=None):
    masks, _ = super().init(params)
    return masks, jax.tree.map(jnp.asarray, params)


def test_an_older_rewinding_subclass_still_rewinds():
  sched = _LegacyRewind()
  assert protocol.is_rewinding(sched) and sched.update_steps(5) == [2]
  inner = optax.adam(1e-2)
  params, state = _train(transform.sparsify(inner, sched), _params(), 3)
  assert all(bool(jnp.all(p == 0.0)) for p in jax.tree.leaves(params))
  assert int(state.inner_state[0].count) == 0    # the inner optimizer restarted


def test_wrappers_keep_the_sparsity_state():
  inner = optax.adam(1e-2)
  params = _params()
  for sched in (imp.IMP(every=2, rounds=1), ste.STE(0.5), at_init.AtInit(0.5, 'random'),
                schedules.OneShot(0.5)):
    state = transform.sparsify(inner, sched).init(params)
    assert isinstance(state, transform.SparsityState)
    assert len(transform.find_states((state, optax.EmptyState()))) == 1


class _MasksOnly:
  """IMP's traced protocol without its Rewinding capability."""

  def __init__(self, schedule):
    self.schedule = schedule

  def init(self, params, rule):
    return self.schedule.init(params, rule)

  def should_update(self, step):
    return self.schedule.should_update(step)

  def update(self, masks, params, grads, step, state):
    return self.schedule.update(masks, params, grads, step, state)

  def accumulate(self, state, params, grads, step):
    return state


@pytest.mark.parametrize('update', ['in_step', 'separate'])
def test_sparsify_of_imp_is_the_rewinding_wrapper_composed(update):
  sched = imp.IMP(every=2, rounds=1, prune_fraction=0.5)
  inner = optax.adam(1e-2)
  masks_only = transform.sparsify(inner, _MasksOnly(sched), update=update)
  composed = rewinding.rewinding(masks_only, inner, sched, update)
  results = []
  for tx in (composed, transform.sparsify(inner, sched, update=update)):
    params = _params()
    state = tx.init(params)
    for i in range(4):
      extra = {} if update == 'in_step' else {'update_masks': sched.updates_at(i)}
      updates, state = tx.update(_grads(params, i), state, params, **extra)
      params = optax.apply_updates(params, updates)
    results.append(jax.tree.leaves((params, state)))
  for x, y in zip(*results):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
