"""Row-based sparse fine-tuning beyond Dense kernels: conv output channels as
rows, their exact merge, and the group Taylor ('structural') row score of
Molchanov et al. 2019 against a numpy reference."""

import json
import re
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax import config as config_lib, experiment
from sparsejax.core import tree as tree_lib
from sparsejax.data.base import ArraySource, Dataset, batch_indices
from sparsejax.programs import peft, peft_select
from sparsejax.train import checkpoint as ckpt_lib, inspection
from sparsejax.train.task import LoopSettings, Task


def conv_cfg(path, **over):
  c = config_lib.default_config()
  return config_lib.apply_overrides(c, {
      'data.name': 'npz', 'data.options': {'path': str(path)}, 'data.batch_size': 16,
      'data.eval_batch_size': 32, 'model.name': 'conv2', 'model.options': {'width': 0.125},
      'optimizer.name': 'adam', 'optimizer.learning_rate': 3e-3, 'train.steps': 8,
      'train.log_every': 8, 'train.eval_every': 8, 'train.checkpoint_every': 8,
      'train.eval_splits': ('test',), **over})


MODELS = {'conv2': {'width': 0.125},                       # conv 8, 8; FC 32, 32
          'resnet20': {'width': 4, 'blocks_per_stage': 1}}  # BatchNorm, no conv biases


@pytest.fixture(scope='module')
def conv_pretrained(tmp_path_factory):
  """model name -> (config maker, workdir): the tiny model trained a few steps
  on random 8x8x3 images with 4 classes (each trained once per module)."""
  root = tmp_path_factory.mktemp('conv')
  rng = np.random.default_rng(0)
  np.savez(root / 'data.npz', x_train=rng.integers(0, 256, (96, 8, 8, 3), np.uint8),
           y_train=rng.integers(0, 4, 96), x_test=rng.integers(0, 256, (32, 8, 8, 3), np.uint8),
           y_test=rng.integers(0, 4, 32))
  done = {}

  def get(name):
    if name not in done:
      make = lambda **over: conv_cfg(root / 'data.npz', **{
          'model.name': name, 'model.options': MODELS[name], **over})
      experiment.train_and_evaluate(make(), root / name, progress=False)
      done[name] = make, root / name
    return done[name]
  return get


def final_params(workdir):
  state = ckpt_lib.restore_raw(inspection.resolve(workdir))
  return dict(tree_lib.leaves_with_paths(state['params']))


@pytest.mark.parametrize('model,score', [
    ('conv2', 'l2'), pytest.param('resnet20', 'structural', marks=[pytest.mark.slow, pytest.mark.extended])])
def test_conv_rows_are_output_channels_and_only_they_change(conv_pretrained, tmp_path, model,
                                                            score):
  make, pre = conv_pretrained(model)
  c = make(**{'finetune.init_from': str(pre), 'finetune.method': 'row',
              'finetune.targets': r'conv_\d/kernel', 'finetune.head': 'output',
              'finetune.rows': 3, 'finetune.row_score': score, 'finetune.score_batches': 2,
              'train.steps': 4, 'train.eval_every': 4, 'train.checkpoint_every': 4})
  info = experiment.run_finetune(c, tmp_path)['peft']
  method = json.loads((tmp_path / 'peft.json').read_text())
  before = final_params(pre)
  targets = [p for p, w in before.items() if w.ndim == 4 and re.search(r'conv_\d/kernel', p)]
  assert sorted(method['targets']) == sorted(targets) and len(targets) >= 2
  assert info['rows'] == [3] * len(targets)
  head = sum(w.size for p, w in before.items() if p.startswith('output'))
  assert info['trainable_params'] == sum(3 * peft.fan_in(before[p]) for p in targets) + head
  merged = dict(np.load(tmp_path / 'merged.npz'))
  rows = dict(zip(method['targets'], method['rows']))
  for path, w0 in before.items():
    w1 = merged[f'params/{path}']
    if path in rows:
      idx = list(rows[path])
      assert len(idx) == 3
      others = np.setdiff1d(np.arange(w0.shape[-1]), idx)
      np.testing.assert_array_equal(w1[..., others], w0[..., others])   # bit-identical
      assert all(np.any(w1[..., i] != w0[..., i]) for i in idx)       # each chosen one moved
      if score == 'l2':
        norms = np.sqrt(np.sum(w0.reshape(-1, w0.shape[-1]) ** 2, axis=0))
        assert set(idx) == set(np.argsort(-norms)[:3].tolist())
    elif not path.startswith('output'):
      np.testing.assert_array_equal(w1, w0, err_msg=path)   # biases, BN, dense: frozen


def test_conv_row_merge_is_exact_and_survives_a_delta_roundtrip(tmp_path):
  from sparsejax.programs import peft_base, peft_checkpoint as pc
  rng = np.random.default_rng(1)
  params = {'c': {'kernel': rng.normal(size=(3, 3, 2, 5)).astype(np.float32),
                  'bias': rng.normal(size=(5,)).astype(np.float32)},
            'd': {'kernel': rng.normal(size=(4, 3)).astype(np.float32)}}
  method = peft.Method('row', ('c/kernel', 'd/kernel'), rows=((4, 1), (2,)))
  trainable = method.init_trainable(params, jax.random.key(0))
  assert trainable['rows']['c/kernel'].shape == (2, 3, 3, 2)
  assert trainable['rows']['d/kernel'].shape == (1, 4)
  zero = method.merged_params(params, trainable)      # a zero delta is the base, bitwise
  for (p, a), (_, b) in zip(tree_lib.leaves_with_paths(zero), tree_lib.leaves_with_paths(params)):
    np.testing.assert_array_equal(a, b, err_msg=p)
  delta = rng.normal(size=(2, 3, 3, 2)).astype(np.float32)
  trainable['rows'] = {'c/kernel': delta, 'd/kernel': np.ones((1, 4), np.float32)}
  merged = method.merged_params(params, trainable)
  want = params['c']['kernel'].copy()
  want[..., 4] += delta[0]
  want[..., 1] += delta[1]
  np.testing.assert_array_equal(merged['c']['kernel'], want)
  np.testing.assert_array_equal(merged['d']['kernel'][:, 2], params['d']['kernel'][:, 2] + 1)
  np.testing.assert_array_equal(merged['c']['bias'], params['c']['bias'])
  base = tmp_path / 'base.npz'
  np.savez(base, **{f'params/{p}': x for p, x in tree_lib.leaves_with_paths(params)})
  pc.write_delta(tmp_path / 'delta', method, trainable, params, peft_base.base_reference(str(base)))
  again, _ = pc.merge(tmp_path / 'delta')
  np.testing.assert_array_equal(again['c']['kernel'], want)


def test_lora_and_unstructured_accept_a_conv_kernel():
  params = {'c': {'kernel': np.ones((3, 3, 2, 4), np.float32)}}
  lora = peft.Method('lora', ('c/kernel',), rank=2, scale=0.5)
  t = lora.init_trainable(params, jax.random.key(0))
  assert t['lora']['c/kernel']['a'].shape == (18, 2) and t['lora']['c/kernel']['b'].shape == (2, 4)
  t['lora']['c/kernel']['b'] = jnp.ones((2, 4))
  merged = lora.merge(params, t)['c']['kernel']
  want = 1 + 0.5 * (t['lora']['c/kernel']['a'] @ jnp.ones((2, 4))).reshape(3, 3, 2, 4)
  np.testing.assert_allclose(merged, want, rtol=1e-6)
  assert peft.fan_in(params['c']['kernel']) == 18
  sparse = peft.Method('unstructured', ('c/kernel',), entries=((0, 71),))
  t = sparse.init_trainable(params, jax.random.key(0))
  t['sparse']['c/kernel'] = jnp.asarray([2.0, 3.0])
  merged = np.asarray(sparse.merge(params, t)['c']['kernel'])
  assert merged[0, 0, 0, 0] == 3.0 and merged[2, 2, 1, 3] == 4.0 and merged.sum() == 72 + 5


def test_structural_score_on_a_hand_computed_case():
  # Column 0: 1*0.5 + 3*(-1) + bias 1*2 = -0.5; column 1: 2*1 + (-1)*2 + 0*3 = 0.
  w, g = np.array([[1.0, 2.0], [3.0, -1.0]]), np.array([[0.5, 1.0], [-1.0, 2.0]])
  np.testing.assert_allclose(peft.structural_importance(w, g, np.array([1.0, 0.0]),
                                                        np.array([2.0, 3.0])), [0.25, 0.0])
  np.testing.assert_allclose(peft.structural_importance(w, g), [2.5 ** 2, 0.0])
  # 'taylor' sums |w*g| instead: no cancellation inside a row.
  params, grads = {'k': {'kernel': w}}, {'k': {'kernel': g}}
  np.testing.assert_allclose(peft.row_scores('taylor', params, ['k/kernel'], grads=grads)
                             ['k/kernel'], [3.5, 4.0])
  # A conv kernel: the sum runs over kh, kw and c_in of each output channel.
  wc = np.arange(24, dtype=np.float64).reshape(2, 2, 3, 2) / 10
  gc = np.cos(np.arange(24)).reshape(2, 2, 3, 2)
  want = [np.sum(wc[..., o] * gc[..., o]) ** 2 for o in range(2)]
  np.testing.assert_allclose(peft.structural_importance(wc, gc), want, rtol=1e-12)


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3, name='out')(x)


def test_structural_scores_over_batches_match_numpy():
  """Softmax regression: per batch, dL/dW = x^T (p - onehot) / B and
  dL/db = mean(p - onehot); the score is the sum over batches of
  (sum_i W[i, j] dW[i, j] + b[j] db[j])^2."""
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(40, 5)).astype(np.float32), rng.integers(0, 3, 40).astype(np.int32)
  ds = Dataset('toy', ArraySource(x, y), ArraySource(x, y), None, num_classes=3,
               input_shape=(5,), input_dtype=np.float32)
  task = Task(dataset=ds, model=_Linear(), optimizer=optax.sgd(0.1), batch_size=8,
              loop=LoopSettings(seed=3))
  W, b = rng.normal(size=(5, 3)), rng.normal(size=(3,))
  params = {'out': {'kernel': W.astype(np.float32), 'bias': b.astype(np.float32)}}
  got = peft_select.structural_scores(types.SimpleNamespace(task=task), params, {},
                                      ['out/kernel'], 3)['out/kernel']
  want = np.zeros(3)
  for step in range(3):
    idx = batch_indices(40, 8, 3, step)
    xb, yb = x[idx].astype(np.float64), y[idx]
    logits = xb @ W.astype(np.float32) + b.astype(np.float32)
    p = np.exp(logits - logits.max(1, keepdims=True))
    err = p / p.sum(1, keepdims=True) - np.eye(3)[yb]
    gW, gb = xb.T @ err / len(idx), err.mean(0)
    want += (np.sum(W.astype(np.float32) * gW, axis=0) + b.astype(np.float32) * gb) ** 2
  np.testing.assert_allclose(got, want, rtol=2e-4)


def test_unknown_row_score_names_the_key():
  c = config_lib.apply_overrides(config_lib.default_config(),
                                 {'finetune.row_score': 'fisher'})
  with pytest.raises(config_lib.ConfigError, match=r"'finetune.row_score'.*structural.*'fisher'"):
    config_lib.to_settings(c)
  with pytest.raises(Exception, match='finetune.row_score'):
    peft.row_scores('fisher', {'k': np.ones((2, 2))}, ['k'])
  with pytest.raises(Exception, match=r'finetune.targets.*2-D \(Dense\) or 4-D \(Conv\)'):
    peft.target_paths({'k': np.ones((2, 2, 2))}, 'k')
