"""Mixed precision (issue 13.3): bf16 compute with float32 or bf16 params;
pruned weights stay exactly zero in every dtype."""

import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import config as config_lib, experiment
from sparsejax.core import registry, transform
from sparsejax.train import loop
from sparsejax.train.task import SetupError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def small_task(**train):
  cfg = config_lib.apply_overrides(
      config_lib.load_config(ROOT / 'configs' / 'mnist1d_mlp.py'),
      {'train.steps': 20, 'train.eval_every': 20, 'train.checkpoint_every': 20,
       'train.log_every': 20, 'model.options.hidden': 32,
       **{f'train.{k}': v for k, v in train.items()}})
  return experiment.build_task(cfg)


def pruned_values(params, masks):
  leaves = jax.tree.leaves(masks, is_leaf=lambda m: m is None)
  return np.concatenate([np.asarray(p, np.float32)[~np.asarray(m)].ravel()
                         for p, m in zip(jax.tree.leaves(params), leaves) if m is not None])


class BNNet(nn.Module):
  """Dense -> BatchNorm -> Dense: a model with float model state."""

  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(32)(x)
    x = nn.BatchNorm(use_running_average=not train)(x)
    return nn.Dense(10)(nn.relu(x))


@pytest.mark.parametrize('param_dtype', ['float32', 'bfloat16'])
def test_bf16_keeps_pruned_weights_exactly_zero(tmp_path, param_dtype):
  task = small_task(compute_dtype='bfloat16', param_dtype=param_dtype)
  task = task.replace(schedule=registry.make_schedule('rigl', sparsity=0.9, every=5,
                                                      end=15, allocation='uniform'))
  result = loop.train(task, tmp_path, progress=False, log=lambda s: None)
  state = jax.device_get(result.state)
  dtypes = {str(p.dtype) for p in jax.tree.leaves(state.params)}
  assert dtypes == {param_dtype}
  masks = transform.get_masks(state.opt_state)
  values = pruned_values(state.params, masks)
  assert values.size > 0 and np.all(values == 0.0)
  for m in jax.tree.leaves(masks):   # RigL keeps every layer at 10%, to the weight
    assert abs(int(np.sum(m)) - 0.1 * m.size) <= 1
  assert np.isfinite(result.summary['eval']['test']['loss'])
  # the forward's matrix products run in bf16; the outputs come back in float32
  x = jnp.zeros((4, *task.dataset.input_shape), task.dataset.input_dtype)
  jaxpr = str(jax.make_jaxpr(lambda p: task.apply(p, {}, x)[0])(state.params))
  assert 'dot_general' in jaxpr and 'bf16[4,32]' in jaxpr
  assert task.apply(state.params, {}, x)[0].dtype == jnp.float32


def test_model_state_keeps_its_dtype_and_errors_name_the_key():
  task = small_task(compute_dtype='bfloat16').replace(model=BNNet())
  variables = task.init_variables(jax.random.key(0))
  params, state = variables.pop('params'), variables
  batch = task.dataset.train.get(np.arange(8))
  loss, (_, new_state) = task.train_loss(params, state, tuple(map(jnp.asarray, batch)),
                                         jax.random.key(1))
  assert np.isfinite(float(loss))
  for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
    assert a.dtype == b.dtype == jnp.float32
  with pytest.raises(config_lib.ConfigError, match='train.compute_dtype'):
    small_task(compute_dtype='bf16')
  with pytest.raises(SetupError, match='param_dtype'):
    small_task().replace(param_dtype='int8')
