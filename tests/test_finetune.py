"""Fine-tuning trained models: prune then recover, the Python API, and the
parameter-efficient methods (row-based, LoRA, unstructured, full)."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.core import tree as tree_lib
from sparsejax.programs import finetune, peft
from sparsejax.train import checkpoint as ckpt_lib, inspection

ROOT = pathlib.Path(__file__).resolve().parent.parent
BASE = {'train.steps': 60, 'train.eval_every': 30, 'train.checkpoint_every': 30,
        'train.log_every': 30, 'model.options.hidden': 32,
        'data.options': {'validation': 500}, 'train.eval_splits': ('validation', 'test')}


def cfg(**over):
  return config_lib.apply_overrides(
      config_lib.load_config(ROOT / 'configs' / 'mnist1d_mlp.py'), {**BASE, **over})


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('pretrained')
  experiment.train_and_evaluate(cfg(), workdir, progress=False)
  return workdir


def final(workdir):
  return ckpt_lib.restore_raw(inspection.resolve(workdir))


def test_prune_then_recover_keeps_mask_exact(pretrained, tmp_path):
  c = cfg(**{'finetune.init_from': str(pretrained), 'sparsity': 0.8,
             'pruning.schedule': 'oneshot', 'pruning.allocation': 'global',
             'optimizer.name': 'adamw', 'optimizer.options': {'weight_decay': 0.5},
             'optimizer.learning_rate': 3e-3, 'optimizer.warmup_steps': 10,
             'optimizer.schedule': 'cosine'})
  row = experiment.run_finetune(c, tmp_path)
  assert row['after_pruning'] is not None and 'test_accuracy' in row['after_pruning']
  state = final(tmp_path)
  masks = state['opt_state']['masks']
  pretrained_params = final(pretrained)['params']
  # The mask is the global top 20% by magnitude of the loaded weights, exactly.
  want = sj.prune(pretrained_params, 0.8, allocation='global')[1]
  for m, w in zip(jax.tree.leaves(masks), jax.tree.leaves(want)):
    np.testing.assert_array_equal(m, w)
  # Strong weight decay never revives a pruned weight; counts are unchanged.
  for p, m in zip(jax.tree.leaves(state['params']), jax.tree.leaves(
      masks, is_leaf=lambda x: x is None)):
    if m is not None:
      assert np.all(np.asarray(p)[~m] == 0.0)
  assert row['density'] == pytest.approx(0.2, abs=1e-4)


def test_gradual_pruning_during_fine_tuning(pretrained, tmp_path):
  c = cfg(**{'finetune.init_from': str(pretrained), 'sparsity': 0.5,
             'pruning.schedule': 'gradual', 'pruning.start': 0, 'pruning.end': 40,
             'pruning.every': 10})
  row = experiment.run_finetune(c, tmp_path)
  assert row['density'] == pytest.approx(0.5, abs=1e-3)
  at_start = [m for s, m in row['curve'] if s == 0][0]
  first = json.loads((pretrained / 'summary.json').read_text())['eval']['test']['accuracy']
  assert at_start['test_accuracy'] == pytest.approx(first)    # step 0 is the loaded model


def test_loading_errors_name_the_key(pretrained, tmp_path):
  with pytest.raises(ckpt_lib.CheckpointError, match=r"'hidden_0/bias' has shape \(32,\); the model needs \(16,\)"):
    experiment.run_finetune(cfg(**{'finetune.init_from': str(pretrained),
                                   'model.options.hidden': 16}), tmp_path / 'a')
  params = final(pretrained)['params']
  flat = {f'params/{p}': np.asarray(x) for p, x in tree_lib.leaves_with_paths(params)
          if p != 'output/bias'}
  np.savez(tmp_path / 'w.npz', **flat)
  with pytest.raises(ckpt_lib.CheckpointError, match="no key 'output/bias'"):
    experiment.run_finetune(cfg(**{'finetune.init_from': str(tmp_path / 'w.npz')}),
                            tmp_path / 'b')


def test_fine_tune_python_api():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {'w': jax.random.normal(k1, (8, 4)), 'b': jnp.zeros(4)}
  pruned, masks = sj.prune(params, 0.75)
  x = jax.random.normal(k2, (64, 8))
  y = x @ jax.random.normal(k3, (8, 4))
  loss = lambda p, b: jnp.mean((b[0] @ p['w'] + p['b'][None, :] - b[1]) ** 2)
  out = finetune.fine_tune(pruned, masks, loss, [(x, y)] * 50,
                           optimizer=optax.adam(1e-1), steps=40)
  assert float(loss(out, (x, y))) < float(loss(pruned, (x, y)))
  assert np.all(np.asarray(out['w'])[~np.asarray(masks['w'])] == 0.0)


PEFT = {'finetune.targets': r'hidden_\d/kernel', 'finetune.head': 'output',
        'finetune.rows': 4, 'finetune.rank': 2, 'finetune.dense_steps': 20,
        'finetune.score_batches': 2}


@pytest.mark.parametrize('score', ['l2', 'taylor', 'activation', 'random'])
def test_row_method_changes_only_chosen_rows(pretrained, tmp_path, score):
  c = cfg(**{'finetune.init_from': str(pretrained), 'finetune.method': 'row',
             'finetune.row_score': score, **PEFT})
  row = experiment.run_finetune(c, tmp_path)
  info = row['peft']
  assert info['rows'] == [4, 4]
  assert info['trainable_params'] == 4 * 40 + 4 * 32 + 32 * 10 + 10   # deltas + new head
  method = json.loads((tmp_path / 'peft.json').read_text())
  merged = dict(np.load(tmp_path / 'merged.npz'))
  before = dict(tree_lib.leaves_with_paths(final(pretrained)['params']))
  for path, idx in zip(method['targets'], method['rows']):
    w0, w1 = before[path], merged[f'params/{path}']
    others = np.setdiff1d(np.arange(w0.shape[1]), idx)
    np.testing.assert_array_equal(w1[:, others], w0[:, others])   # bit-identical
    assert not np.array_equal(w1[:, list(idx)], w0[:, list(idx)])
  if score == 'l2':   # the rows kept are the columns of largest L2 norm
    for path, idx in zip(method['targets'], method['rows']):
      norms = np.linalg.norm(before[path], axis=0)
      assert set(idx) == set(np.argsort(-norms)[:4].tolist())


def test_row_budget_larger_than_layer(pretrained, tmp_path):
  c = cfg(**{'finetune.init_from': str(pretrained), 'finetune.method': 'row',
             **PEFT, 'finetune.rows': 33})
  with pytest.raises(config_lib.ConfigError, match="33 rows.*'hidden_0/kernel' has only 32"):
    experiment.run_finetune(c, tmp_path)


def test_baselines_budgets_and_memory(pretrained, tmp_path):
  rows = {}
  for method in ('row', 'lora', 'unstructured', 'full'):
    c = cfg(**{'finetune.init_from': str(pretrained), 'finetune.method': method, **PEFT})
    rows[method] = experiment.run_finetune(c, tmp_path / method)['peft']
  head = 32 * 10 + 10
  assert rows['lora']['trainable_params'] == 2 * (40 + 32) + 2 * (32 + 32) + head
  # Unstructured trains as many individual weights as the row method's deltas.
  deltas = 4 * 40 + 4 * 32
  assert rows['unstructured']['trainable_params'] == deltas + head
  assert rows['full']['trainable_params'] == rows['full']['total_params']
  # Gradients and optimizer state grow with what is trained; unstructured
  # also keeps one int32 index per trained weight, rows one per row.
  assert rows['row']['bytes_opt_state'] == rows['unstructured']['bytes_opt_state']
  assert rows['unstructured']['bytes_opt_state'] < rows['full']['bytes_opt_state']
  assert (rows['row']['bytes_indices'], rows['unstructured']['bytes_indices']) == (
      4 * 8, 4 * deltas)
  assert rows['row']['bytes_total'] < rows['unstructured']['bytes_total']
  assert rows['lora']['bytes_total'] < rows['unstructured']['bytes_total']
  # The weights chosen by the dense phase changed; every other target weight
  # is bit-identical to the pretrained one.
  method = json.loads((tmp_path / 'unstructured' / 'peft.json').read_text())
  assert sum(len(e) for e in method['entries']) == deltas
  merged = dict(np.load(tmp_path / 'unstructured' / 'merged.npz'))
  before = dict(tree_lib.leaves_with_paths(final(pretrained)['params']))
  for path, entries in zip(method['targets'], method['entries']):
    w0, w1 = before[path].reshape(-1), merged[f'params/{path}'].reshape(-1)
    others = np.setdiff1d(np.arange(w0.size), entries)
    np.testing.assert_array_equal(w1[others], w0[others])
    assert np.any(w1[list(entries)] != w0[list(entries)])


def test_unstructured_method_skips_matrices_with_no_entries():
  """A global selection may give a matrix nothing: no zero-size leaf (orbax
  cannot save one), and that matrix merges unchanged."""
  params = {'a': {'kernel': np.arange(6.0, dtype=np.float32).reshape(2, 3)},
            'b': {'kernel': np.ones((3, 2), np.float32)}}
  method = peft.Method('unstructured', ('a/kernel', 'b/kernel'), entries=((1, 4), ()))
  trainable = method.init_trainable(params, jax.random.key(0))
  assert list(trainable['sparse']) == ['a/kernel']
  trainable['sparse']['a/kernel'] = jnp.asarray([10.0, 20.0])
  merged = method.merge(params, trainable)
  np.testing.assert_array_equal(merged['a']['kernel'], [[0, 11, 2], [3, 24, 5]])
  np.testing.assert_array_equal(merged['b']['kernel'], params['b']['kernel'])


def test_unstructured_by_gradient_trains_only_chosen_weights(pretrained, tmp_path):
  c = cfg(**{'finetune.init_from': str(pretrained), 'finetune.method': 'unstructured',
             **PEFT, 'finetune.select': 'gradient'})
  info = experiment.run_finetune(c, tmp_path)['peft']
  deltas = 4 * 40 + 4 * 32
  assert info['trainable_params'] == deltas + 32 * 10 + 10
  assert info['bytes_indices'] == 4 * deltas
  method = json.loads((tmp_path / 'peft.json').read_text())
  merged = dict(np.load(tmp_path / 'merged.npz'))
  before = dict(tree_lib.leaves_with_paths(final(pretrained)['params']))
  for path, entries in zip(method['targets'], method['entries']):
    w0, w1 = before[path].reshape(-1), merged[f'params/{path}'].reshape(-1)
    others = np.setdiff1d(np.arange(w0.size), entries)
    np.testing.assert_array_equal(w1[others], w0[others])
