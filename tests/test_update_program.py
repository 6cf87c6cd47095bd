"""`sparsify(..., update='separate')`: the mask update runs as its own program,
only on the steps the host picks, bitwise the same as the single program that
updates under a `lax.cond` inside every step; the plain step holds no cond."""

import functools
import re

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import models
from sparsejax.core import transform
from sparsejax.data import base as data_base
from sparsejax.train import loop
from sparsejax.train.task import LoopSettings, Task
from conftest import default_fusion_emitters, dict_loss, dict_params

STEPS = 30
SCHEDULES = {
    'gradual': sj.make_schedule('gradual', sparsity=0.8, start=0, end=25, every=5),
    'rigl': sj.make_schedule('rigl', sparsity=0.8, every=5, end=30),
    'set': sj.make_schedule('set', sparsity=0.8, every=5, end=30),
    'imp': sj.make_schedule('imp', every=5, rounds=3, prune_fraction=0.4, rewind_step=2),
}


def _batch(i):
  x = jax.random.normal(jax.random.fold_in(jax.random.key(11), i), (16, 8))
  y = jax.random.randint(jax.random.fold_in(jax.random.key(12), i), (16,), 0, 4)
  return x, y


def _step_fn(tx):
  """One jitted step for both modes; `update_masks` static (None: not passed)."""
  @functools.partial(jax.jit, static_argnames='update_masks')
  def step(params, state, batch, update_masks=None):
    grads = jax.grad(dict_loss)(params, batch)
    flag = {} if update_masks is None else {'update_masks': update_masks}
    updates, state = tx.update(grads, state, params, **flag)
    return optax.apply_updates(params, updates), state
  return step


def _train(tx, steps, update_steps=None):
  """Final params and state, and the masks after every step. With
  `update_steps` (micro-steps), passes update_masks=True there, else False."""
  params = dict_params()
  state = tx.init(params)
  params = sj.masked_params(params, state)
  step, history = _step_fn(tx), []
  for i in range(steps):
    flag = None if update_steps is None else i in update_steps
    params, state = step(params, state, _batch(i), update_masks=flag)
    history.append(jax.device_get(sj.get_masks(state)))
  return params, state, history


def _assert_bitwise(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b) and len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize('name', sorted(SCHEDULES))
def test_separate_update_is_bitwise_the_single_program(name):
  schedule = SCHEDULES[name]
  steps = schedule.update_steps(STEPS)
  # the host-side list agrees with the predicates evaluated on Python ints
  assert steps == [s for s in range(STEPS) if schedule.updates_at(s)]
  assert steps and all(isinstance(s, int) for s in steps)
  p1, s1, h1 = _train(sj.sparsify(optax.adam(1e-2), schedule), STEPS)
  p2, s2, h2 = _train(sj.sparsify(optax.adam(1e-2), schedule, update='separate'), STEPS,
                      set(steps))
  moved = [i for i in range(1, STEPS) if not all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(h1[i]), jax.tree.leaves(h1[i - 1])))]
  assert moved and set(moved) <= set(steps)   # the masks really moved, on update steps only
  for a, b in zip(h1, h2):
    _assert_bitwise(a, b)
  _assert_bitwise(p1, p2)
  _assert_bitwise(s1, s2)


def test_separate_without_update_steps_keeps_the_mask():
  schedule = SCHEDULES['rigl']
  tx = sj.sparsify(optax.adam(1e-2), schedule, update='separate')
  _, state, history = _train(tx, 12, update_steps=set())
  _assert_bitwise(history[0], history[-1])
  _assert_bitwise(sj.get_masks(state), jax.device_get(sj.get_masks(tx.init(dict_params()))))


def test_chain_and_accumulation_see_the_same_gradients():
  """Clipping before sparsify and MultiSteps outside it: the update program
  on micro-step c * k + k - 1 of each update count c gives the same run
  (docs/core.md: bitwise; under XLA's default emitters, see conftest)."""
  if default_fusion_emitters(
      'tests/test_update_program.py::test_chain_and_accumulation_see_the_same_gradients'):
    return
  k, micro = 3, 36
  schedule = sj.make_schedule('rigl', sparsity=0.8, every=3, end=12)

  def make(update):
    tx = optax.chain(optax.clip_by_global_norm(0.5),
                     sj.sparsify(optax.adam(1e-2), schedule, update=update))
    ms = optax.MultiSteps(tx, every_k_schedule=k)
    return optax.GradientTransformationExtraArgs(ms.init, ms.update)

  steps = {c * k + k - 1 for c in schedule.update_steps(micro // k)}
  assert sorted(steps) == [11, 20, 29]
  p1, s1, h1 = _train(make('in_step'), micro)
  p2, s2, h2 = _train(make('separate'), micro, steps)
  assert not np.array_equal(h1[11]['encoder']['w1'], h1[10]['encoder']['w1'])
  for a, b in zip(h1, h2):
    _assert_bitwise(a, b)
  _assert_bitwise(p1, p2)
  _assert_bitwise(s1, s2)


def _conds_in(jaxpr) -> int:
  """Number of cond equations in a jaxpr, nested ones included."""
  n = 0
  for eqn in jaxpr.eqns:
    n += eqn.primitive.name == 'cond'
    for sub in jax_core.jaxprs_in_params(eqn.params):
      n += _conds_in(sub)
  return n


@pytest.mark.parametrize('name', ['gradual', 'rigl', 'imp'])
def test_plain_step_compiles_no_update_branch(name):
  schedule = SCHEDULES[name]
  params, batch = dict_params(), _batch(0)
  counts = {}
  for mode, flag in (('in_step', None), ('separate', False), ('separate', True)):
    tx = sj.sparsify(optax.adam(1e-2), schedule, update=mode)
    state = tx.init(params)
    step = _step_fn(tx)
    jaxpr = jax.make_jaxpr(functools.partial(step.__wrapped__, update_masks=flag))(
        params, state, batch)
    text = step.lower(params, state, batch, update_masks=flag).as_text()
    counts[mode, flag] = (_conds_in(jaxpr.jaxpr),
                          len(re.findall(r'stablehlo\.(?:case|if)\b', text)))
  assert counts['in_step', None][0] > 0 and counts['in_step', None][1] > 0
  assert counts['separate', False] == (0, 0)
  assert counts['separate', True] == counts['in_step', None]


def test_imp_rewind_copy_costs_the_plain_step_nothing():
  """IMP keeps its rewind weights (one params copy) in the schedule state. In
  the separate-update plain step, donated, that copy is aliased input to
  output: no copy and no scratch beyond a schedule without it (issue 13.2)."""
  params, batch = dict_params(), _batch(0)
  memory = {}
  for name in ('gradual', 'imp'):
    tx = sj.sparsify(optax.adam(1e-2), SCHEDULES[name], update='separate')
    step = jax.jit(functools.partial(_step_fn(tx).__wrapped__, update_masks=False),
                   donate_argnums=(0, 1))
    memory[name] = step.lower(params, tx.init(params), batch).compile().memory_analysis()
  copy = sum(p.size * p.dtype.itemsize for p in jax.tree.leaves(params))
  g, i = memory['gradual'], memory['imp']
  assert i.argument_size_in_bytes - g.argument_size_in_bytes == copy
  assert i.alias_size_in_bytes - g.alias_size_in_bytes == copy
  assert i.temp_size_in_bytes == g.temp_size_in_bytes


def test_flag_errors():
  schedule = SCHEDULES['rigl']
  params = dict_params()
  grads = jax.tree.map(jnp.ones_like, params)
  in_step = sj.sparsify(optax.sgd(0.1), schedule)
  with pytest.raises(TypeError, match="update='separate'"):
    in_step.update(grads, in_step.init(params), params, update_masks=True)
  separate = sj.sparsify(optax.sgd(0.1), schedule, update='separate')
  state = separate.init(params)
  with pytest.raises(TypeError, match='Python bool'):
    jax.jit(lambda f: separate.update(grads, state, params, update_masks=f))(jnp.bool_(True))
  with pytest.raises(ValueError, match='update must be one of'):
    sj.sparsify(optax.sgd(0.1), schedule, update='never')
  assert transform.UPDATE_MODES == ('in_step', 'separate')


def test_loop_runs_the_update_program_on_update_micro_steps(tmp_path, monkeypatch):
  """The training loop (two programs, accumulation by 2) ends bitwise where a
  loop with the single in-step program ends."""
  x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32)
  ds = data_base.Dataset('toy', data_base.ArraySource(x, y), data_base.ArraySource(x, y), None,
                         2, (8,), np.float32)
  task = Task(dataset=ds, optimizer=optax.adam(1e-2), model=models.MLP((16,), num_classes=2),
              batch_size=8, eval_batch_size=64, accumulate=2,
              loop=LoopSettings(steps=24, log_every=4, eval_every=24, checkpoint_every=24),
              schedule=sj.make_schedule('rigl', sparsity=0.5, every=3, end=12))
  assert sorted(loop.update_program_steps(loop.build(task))) == [7, 13, 19]
  separate = loop.train(task, tmp_path / 'separate', progress=False)
  real = transform.sparsify

  def in_step(inner, schedule, rule, update, pack_masks=False):   # the old single program
    assert update == 'separate'
    tx = real(inner, schedule, rule, pack_masks=pack_masks)
    return optax.GradientTransformationExtraArgs(
        tx.init, lambda u, s, params=None, update_masks=None, **kw: tx.update(u, s, params, **kw))
  monkeypatch.setattr(transform, 'sparsify', in_step)
  single = loop.train(task, tmp_path / 'single', progress=False)
  moved = [r for r in map(__import__('json').loads, open(tmp_path / 'separate' / 'metrics.jsonl'))
           if r['kind'] == 'mask_update']
  assert [r['step'] for r in moved] == [8, 14, 20] and all(r['grown'] > 0 for r in moved)
  _assert_bitwise(separate.state, single.state)
