"""The slim schedule protocol: `protocol.SparsitySchedule`, the capability
mixins, the rewinding / straight-through wrappers composed by `sparsify`, and
the deprecated capability defaults every `Schedule` still answers (with a
DeprecationWarning naming the `protocol` function to use)."""

import dataclasses
import inspect
import warnings

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
    assert name in vars(compat.CapabilityDefaults), name   # deprecated, one release


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
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)    # the capabilities' own: no warning
    assert imp.IMP.rewinds and ste.STE.straight_through
  with pytest.warns(DeprecationWarning, match=r'protocol\.is_rewinding\(schedule\)'):
    assert not schedules.OneShot.rewinds
  with pytest.warns(DeprecationWarning, match=r'protocol\.is_straight_through\(schedule\)'):
    assert not schedules.Schedule.straight_through
  s = schedules.OneShot(0.5)
  with pytest.warns(DeprecationWarning, match=r'protocol\.program_key\(schedule\)'):
    assert s.program_key() is None
  with pytest.warns(DeprecationWarning, match=r'protocol\.bind\(schedule, \*\*context\)'):
    assert s.bind(loss_fn=None) is s
  with pytest.warns(DeprecationWarning, match=r'protocol\.needs_binding\(schedule\)'):
    assert not s.needs_binding
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)    # protocol's functions: no warning
    assert protocol.is_rewinding(imp.IMP()) and not protocol.is_rewinding(s)
    assert protocol.is_straight_through(ste.STE(0.5)) and not protocol.is_straight_through(s)


# Each deprecated default, reached from outside, and the replacement its warning names.
DEPRECATED_USES = {
    'rewinds': (lambda s: s.rewinds, False, 'is_rewinding(schedule)'),
    'straight_through': (lambda s: s.straight_through, False, 'is_straight_through(schedule)'),
    'should_rewind': (lambda s: bool(s.should_rewind(3)), False,
                      'should_rewind(schedule, step)'),
    'lr_step': (lambda s: s.lr_step(7), 7, 'lr_step(schedule, step)'),
    'restart_period': (lambda s: s.restart_period, None, 'restart_period(schedule)'),
    'needs_binding': (lambda s: s.needs_binding, False, 'needs_binding(schedule)'),
    'bind': (lambda s: s.bind(batch=None) is s, True, 'bind(schedule, **context)'),
    'program_key': (lambda s: s.program_key(), None, 'program_key(schedule)'),
    'init_data': (lambda s: s.init_data(), None, 'init_data(schedule)'),
    'with_init_data': (lambda s: s.with_init_data(1) is s, True,
                       'with_init_data(schedule, data)'),
}


@pytest.mark.parametrize('name', sorted(DEPRECATED_USES))
def test_each_deprecated_default_warns_once_naming_its_replacement(name):
  assert set(DEPRECATED_USES) == set(compat.DEPRECATED) - {'rewind_target'}
  use, answer, instead = DEPRECATED_USES[name]
  sched = registry.make_schedule('rigl', sparsity=0.5)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    assert use(sched) == answer                      # still the neutral answer
  assert [w.category for w in caught] == [DeprecationWarning], [str(w.message) for w in caught]
  message = str(caught[0].message)
  assert f'RigL.{name} is the deprecated' in message
  assert f'sparsejax.core.protocol.{instead}' in message
  assert caught[0].filename == __file__              # points at the caller


def test_rewind_target_of_a_schedule_that_does_not_rewind_warns_and_raises():
  with pytest.warns(DeprecationWarning, match='rewind_target'):
    with pytest.raises(TypeError, match='does not rewind'):
      schedules.OneShot(0.5).rewind_target({}, ())


def test_capabilities_and_protocol_functions_do_not_warn():
  params = _params()
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    i = imp.IMP(every=2, rounds=1)
    assert i.rewinds and i.lr_step(3) == i.lr_step(3) and not bool(i.should_rewind(1))
    assert i.restart_period == protocol.restart_period(i)
    a = at_init.AtInit(0.5, 'random')
    assert not a.needs_binding and a.bind(batch=None) is a
    d, f = schedules.Dense(), schedules.FixedMask()
    assert d.program_key() == protocol.program_key(d) and f.init_data() is None
    assert f.with_init_data(None) is f
    for name in sorted(registry.SCHEDULES):
      s = registry.make_schedule(name, **({} if name in ('dense', 'fixed', 'imp') else
                                          {'sparsity': 0.5}))
      for ask in (protocol.is_rewinding, protocol.is_straight_through, protocol.needs_binding,
                  protocol.program_key, protocol.init_data, protocol.restart_period):
        ask(s)
      protocol.lr_step(s, 3)
      protocol.should_rewind(s, 3)
      protocol.needs_update(s, 3)
      assert protocol.with_init_data(s, protocol.init_data(s)) is not None
      if not protocol.needs_binding(s):
        assert protocol.bind(s, batch=None) is s
      s.update_steps(4)
    transform.sparsify(optax.adam(1e-2), imp.IMP(every=2, rounds=1)).init(params)
    transform.sparsify(optax.adam(1e-2), ste.STE(0.5)).init(params)


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


def _legacy_rewind():
  """A user's subclass in the older style: the flag and two overrides, no
  Rewinding capability (it warns when it is defined)."""

  @dataclasses.dataclass(frozen=True)
  class LegacyRewind(schedules.Schedule):
    rewinds = True

    def should_rewind(self, step):
      return step == 2

    def rewind_target(self, masks, state):
      return jax.tree.map(jnp.zeros_like, state)

    def init(self, params, rule=None):
      masks, _ = super().init(params)
      return masks, jax.tree.map(jnp.asarray, params)

  return LegacyRewind


def test_an_older_rewinding_subclass_still_rewinds():
  with pytest.warns(DeprecationWarning,
                    match=r'rewinds, should_rewind, rewind_target without the Rewinding '
                          r'.*mix in sparsejax\.core\.protocol\.Rewinding') as caught:
    sched = _legacy_rewind()()
  assert len(caught) == 1 and caught[0].filename == __file__
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)   # defined once: no more warnings
    assert protocol.is_rewinding(sched) and sched.update_steps(5) == [2]
    assert not protocol.is_straight_through(sched) and protocol.lr_step(sched, 4) == 4
    inner = optax.adam(1e-2)
    params, state = _train(transform.sparsify(inner, sched), _params(), 3)
  assert all(bool(jnp.all(p == 0.0)) for p in jax.tree.leaves(params))
  assert int(state.inner_state[0].count) == 0    # the inner optimizer restarted


def test_an_older_straight_through_subclass_still_takes_the_ste_path():
  with pytest.warns(DeprecationWarning, match=r'mix in sparsejax\.core\.protocol\.'
                                              r'StraightThrough'):
    @dataclasses.dataclass(frozen=True)
    class LegacySTE(ste.Schedule):
      straight_through = True
      every: int = 1
      sr_decay: float = 0.0

      def init(self, params, rule=None):
        masks, _ = super().init(params)
        shadow = jax.tree.map(lambda p, m: None if m is None else p, params, masks)
        return self.update(masks, params, None, 0, shadow)

      def should_update(self, step):
        return step % self.every == 0

      def update(self, masks, params, grads, step, state):    # top |w| of the dense weights
        magnitude = jax.tree.map(lambda w, m: None if m is None else jnp.abs(w), params, masks)
        return self.masks_at(jax.tree.map(jnp.ones_like, masks), magnitude), state

  sched = LegacySTE(0.5)
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)
    assert protocol.is_straight_through(sched) and not protocol.is_rewinding(sched)
    params, state = _train(transform.sparsify(optax.adam(1e-2), sched), _params(), 2)
  dense = state.schedule_state            # the STE path keeps the dense shadow weights
  masks = transform.get_masks(state)
  assert bool(jnp.any(dense['w1'] != 0.0) & jnp.any(~masks['w1']))
  assert bool(jnp.all(jnp.where(masks['w1'], params['w1'] == dense['w1'], params['w1'] == 0.0)))


def test_an_older_subclass_with_the_capability_mixed_in_does_not_warn():
  with warnings.catch_warnings():
    warnings.simplefilter('error', DeprecationWarning)

    @dataclasses.dataclass(frozen=True)
    class Keyed(protocol.SharesPrograms, schedules.OneShot):
      def program_key(self):
        return ('keyed', self.sparsity)

    assert protocol.program_key(Keyed(0.5)) == ('keyed', 0.5)


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
