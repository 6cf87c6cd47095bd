"""Optimizer specs (sparsejax.optim): built optimizers match hand-built optax
ones exactly, bad specs fail naming the key, schedules, plateau and accumulation."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.optim import OptimizerError, accumulate, build_optimizer, learning_rate_fn


def params():
  k = jax.random.split(jax.random.key(0), 2)
  return {'w': jax.random.normal(k[0], (4, 3)), 'b': jax.random.normal(k[1], (3,))}


def grads(step):
  k = jax.random.split(jax.random.key(100 + step), 2)
  return {'w': 3.0 * jax.random.normal(k[0], (4, 3)), 'b': 3.0 * jax.random.normal(k[1], (3,))}


def run(tx, steps, p=None, **extra):
  """Updates of `steps` jitted tx.update calls (params held fixed), and the final state."""
  p = params() if p is None else p
  state, out, update = tx.init(p), [], jax.jit(tx.update)
  for i in range(steps):
    u, state = update(grads(i), state, p, **extra)
    out.append(u)
  return out, state


def assert_same(a, b):
  jax.tree.map(np.testing.assert_array_equal, a, b)


def my_opt(learning_rate, momentum=None):
  """A user optimizer reached by import path: optax.sgd under another name."""
  return optax.sgd(learning_rate, momentum=momentum)


def test_sgd_options_match_optax_exactly():
  tx, _ = build_optimizer({'name': 'sgd', 'learning_rate': 0.1,
                           'options': {'momentum': 0.9, 'nesterov': True}}, 100)
  got, _ = run(tx, 2)
  want, _ = run(optax.sgd(0.1, momentum=0.9, nesterov=True), 2)
  assert_same(got, want)
  # momentum is really on: the second update is not just -lr * g
  assert not np.allclose(got[1]['w'], -0.1 * grads(1)['w'])


def test_unknown_option_key_names_key_optimizer_and_keywords():
  with pytest.raises(OptimizerError, match=r"'momentun'.*sgd.*did you mean 'momentum'") as e:
    build_optimizer({'name': 'sgd', 'options': {'momentun': 0.9}}, 10)
  assert e.value.key == 'optimizer.options'
  assert 'nesterov' in str(e.value)  # lists the keywords sgd takes
  with pytest.raises(OptimizerError, match="top level"):
    build_optimizer({'name': 'sgd', 'options': {'learning_rate': 0.1}}, 10)


def test_unknown_spec_key_and_name():
  with pytest.raises(OptimizerError, match=r"key 'warmup_step' is unknown \(did you mean 'warmup_steps'") as e:
    build_optimizer({'warmup_step': 3}, 10)
  assert e.value.key == 'optimizer.warmup_step'
  with pytest.raises(OptimizerError, match=r"no 'adamm'.*'adam'") as e:
    build_optimizer({'name': 'adamm'}, 10)
  assert e.value.key == 'optimizer.name'
  with pytest.raises(OptimizerError, match="optax.contrib:muon"):
    build_optimizer({'name': 'muon'}, 10)


def test_chain_matches_hand_built_chain():
  spec = {'name': 'sgd', 'learning_rate': 0.05, 'options': {'momentum': 0.9},
          'chain': [('clip_by_global_norm', {'max_norm': 1.0}),
                    ['add_decayed_weights', {'weight_decay': 5e-4}]]}
  tx, _ = build_optimizer(spec, 100)
  ref = optax.chain(optax.clip_by_global_norm(1.0), optax.add_decayed_weights(5e-4),
                    optax.sgd(0.05, momentum=0.9))
  assert float(optax.tree.norm(grads(0))) > 1.0  # clipping is active
  got, _ = run(tx, 2)
  want, _ = run(ref, 2)
  assert_same(got, want)
  # and it differs from the optimizer without the chain
  plain, _ = run(optax.sgd(0.05, momentum=0.9), 1)
  assert not np.allclose(got[0]['w'], plain[0]['w'])


def test_bad_chain_entries_name_their_index():
  with pytest.raises(OptimizerError, match=r"chain\[1\].*'clip_by_globl_norm'.*'clip_by_global_norm'") as e:
    build_optimizer({'chain': ['zero_nans', 'clip_by_globl_norm']}, 10)
  assert e.value.key == 'optimizer.chain[1]'
  with pytest.raises(OptimizerError, match=r"'max_nrm'.*clip_by_global_norm.*max_norm") as e:
    build_optimizer({'chain': [('clip_by_global_norm', {'max_nrm': 1.0})]}, 10)
  assert e.value.key == 'optimizer.chain[0]'
  with pytest.raises(OptimizerError, match="missing a required argument: 'max_norm'"):
    build_optimizer({'chain': ['clip_by_global_norm']}, 10)


def test_import_path_names():
  tx, _ = build_optimizer({'name': f'{__name__}:my_opt', 'learning_rate': 0.1,
                           'options': {'momentum': 0.5}}, 10)
  got, _ = run(tx, 2)
  want, _ = run(optax.sgd(0.1, momentum=0.5), 2)
  assert_same(got, want)
  with pytest.raises(OptimizerError, match="'nesterov' is not a keyword of"):
    build_optimizer({'name': f'{__name__}:my_opt', 'options': {'nesterov': True}}, 10)
  got, _ = run(build_optimizer({'name': 'optax:adam', 'learning_rate': 0.01}, 10)[0], 2)
  want, _ = run(optax.adam(0.01), 2)
  assert_same(got, want)
  with pytest.raises(OptimizerError, match="cannot import") as e:
    build_optimizer({'name': 'no_such_module_xyz:opt'}, 10)
  assert e.value.key == 'optimizer.name'


def test_warmup_cosine_boundaries_and_use():
  spec = {'name': 'sgd', 'learning_rate': 0.2, 'schedule': 'cosine', 'warmup_steps': 10,
          'end_factor': 0.1}
  sched = learning_rate_fn(spec, 110)  # decay_steps 0: the 100 steps after warmup
  np.testing.assert_allclose([float(sched(s)) for s in (0, 5, 10, 60, 110, 500)],
                             [0.0, 0.1, 0.2, 0.11, 0.02, 0.02], rtol=1e-6, atol=1e-8)
  # the optimizer follows the same schedule: sgd's update at step s is -sched(s) * g
  tx, sched2 = build_optimizer(spec, 110)
  updates, _ = run(tx, 12)
  for s in (0, 5, 10, 11):
    np.testing.assert_allclose(updates[s]['w'], -sched2(s) * grads(s)['w'], rtol=1e-6)
  linear = learning_rate_fn({'learning_rate': 1.0, 'schedule': 'linear', 'decay_steps': 50}, 1000)
  np.testing.assert_allclose([float(linear(s)) for s in (0, 25, 50, 999)], [1.0, 0.5, 0.0, 0.0])
  assert float(learning_rate_fn({'learning_rate': 0.3, 'schedule': 'plateau'}, 10)(7)) == pytest.approx(0.3)


def test_plateau_reduces_on_flat_loss_via_value():
  spec = {'name': 'sgd', 'learning_rate': 1.0, 'schedule': 'plateau', 'plateau_factor': 0.5,
          'plateau_patience': 2, 'plateau_steps': 1}
  tx, _ = build_optimizer(spec, 100)
  updates, state = run(tx, 4, value=jnp.float32(3.0))  # never improves after the first
  scale = [float(u['w'][0, 0] / -grads(i)['w'][0, 0]) for i, u in enumerate(updates)]
  np.testing.assert_allclose(scale, [1.0, 1.0, 0.5, 0.5], rtol=1e-6)
  assert float(state[-1].scale) == 0.5
  p, st, update = params(), tx.init(params()), jax.jit(tx.update)
  for i in range(4):  # an improving loss keeps the full rate
    _, st = update(grads(i), st, p, value=jnp.float32(3.0 - i))
  assert float(st[-1].scale) == 1.0
  with pytest.raises(TypeError, match='value'):
    tx.update(grads(0), tx.init(p), p)
  # without plateau the tx still accepts (and ignores) value=
  got, _ = run(build_optimizer({'name': 'adamw'}, 10)[0], 1, value=jnp.float32(1.0))
  assert_same(got, run(optax.adamw(1e-3), 1)[0])


def test_accumulate_inner_count_advances_once_per_k():
  tx, _ = build_optimizer({'name': 'adam', 'learning_rate': 0.01, 'schedule': 'plateau',
                           'plateau_steps': 1}, 100)
  acc = accumulate(tx, 4)
  p, update = params(), jax.jit(acc.update)
  state, counts = acc.init(p), []
  for i in range(8):
    u, state = update(grads(i), state, p, value=jnp.float32(1.0))  # value= reaches the plateau
    counts.append(int(state.inner_opt_state[0][0].count))  # adam's scale_by_adam count
    if i % 4 != 3:
      assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(u))
  assert counts == [0, 0, 0, 1, 1, 1, 1, 2]
  assert int(state.gradient_step) == 2
  # the emitted update is the plain optimizer's update of the mean gradient
  mean = jax.tree.map(lambda *g: sum(g) / 4, *[grads(i) for i in range(4)])
  want, _ = tx.update(mean, tx.init(p), p, value=jnp.float32(1.0))
  state, got = acc.init(p), None
  for i in range(4):
    got, state = update(grads(i), state, p, value=jnp.float32(1.0))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), got, want)
  # k == 1 is the transformation itself; k < 1 is an error naming the key
  assert_same(run(accumulate(optax.sgd(0.1), 1), 2)[0], run(optax.sgd(0.1), 2)[0])
  with pytest.raises(OptimizerError, match='optimizer.accumulate'):
    accumulate(tx, 0)


@pytest.mark.parametrize('key,value', [
    ('learning_rate', 0.0), ('learning_rate', 'big'), ('learning_rate', True),
    ('warmup_steps', -1), ('decay_steps', 2.5), ('accumulate', 0), ('end_factor', 1.5),
    ('schedule', 'cosin'), ('plateau_factor', 1.0), ('options', [1]), ('chain', 'zero_nans'),
])
def test_bad_values_name_the_key(key, value):
  with pytest.raises(OptimizerError, match=f'optimizer.{key}') as e:
    build_optimizer({key: value}, 10)
  assert e.value.key == f'optimizer.{key}'
