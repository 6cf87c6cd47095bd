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


@pytest.fixture(scope='module')
def peft_run(pretrained, tmp_path_factory):
  """method -> (workdir, result row) of a PEFT run from `pretrained`, each
  method run once per module (shared by the baselines and the delta tests)."""
  done = {}

  def run(method):
    if method not in done:
      workdir = tmp_path_factory.mktemp(method)
      c = cfg(**{'finetune.init_from': str(pretrained), 'finetune.method': method, **PEFT})
      done[method] = workdir, experiment.run_finetune(c, workdir)
    return done[method]
  return run


@pytest.mark.extended   # about 36 s: with the extended checks
def test_baselines_budgets_and_memory(pretrained, peft_run):
  rows = {m: peft_run(m)[1]['peft'] for m in ('row', 'lora', 'unstructured', 'full')}
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
  workdir = peft_run('unstructured')[0]
  method = json.loads((workdir / 'peft.json').read_text())
  assert sum(len(e) for e in method['entries']) == deltas
  merged = dict(np.load(workdir / 'merged.npz'))
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


def test_a_peft_run_directory_loads_as_its_merged_weights(pretrained, peft_run, tmp_path):
  # `finetune.init_from` / `sparsejax prune --from` a finetune.method run: its
  # checkpoints hold the method's trainable tree ('all/<leaf>' for 'full'),
  # which load_weights used to refuse ("has no leaf ...; it has 'all/...'").
  from sparsejax.train import weights as weights_lib
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          final(pretrained)['params'])
  for method in ('full', 'row'):
    workdir = peft_run(method)[0]
    params, _ = weights_lib.load_weights(workdir, abstract)
    merged = dict(np.load(workdir / 'merged.npz'))
    for path, leaf in tree_lib.leaves_with_paths(params):
      np.testing.assert_array_equal(leaf, merged[f'params/{path}'])
  (tmp_path / 'peft.json').write_text('{}')
  with pytest.raises(ckpt_lib.CheckpointError, match='without its merged.npz'):
    weights_lib.load_weights(tmp_path, abstract)


# --- PEFT deltas: only what was trained, merged back onto the base ----------------

def test_row_delta_holds_only_trained_parts_and_merges_bitwise(pretrained, peft_run, tmp_path):
  from sparsejax.programs import peft_base, peft_checkpoint as pc
  workdir, row = peft_run('row')
  rep = pc.save_delta(workdir, tmp_path / 'delta')
  assert rep['max_abs_diff_vs_merged_npz'] == 0.0
  manifest = json.loads((tmp_path / 'delta' / 'delta.json').read_text())
  assert manifest['base']['sha256'] == peft_base.sha256_of(inspection.resolve(pretrained))
  method = json.loads((workdir / 'peft.json').read_text())
  with np.load(tmp_path / 'delta' / 'delta.npz') as f:
    stored = {k: f[k] for k in f.files}
  assert sorted(stored) == sorted(
      [f'head/{p}' for p in method['head']] + [f'rows/{p}' for p in method['targets']]
      + [f'rows_index/{p}' for p in method['targets']])
  for p, idx in zip(method['targets'], method['rows']):
    assert stored[f'rows_index/{p}'].dtype == np.int32
    np.testing.assert_array_equal(stored[f'rows_index/{p}'], idx)
  floats = sum(v.size for k, v in stored.items() if not k.startswith('rows_index/'))
  assert floats == row['peft']['trainable_params']
  out = pc.write_merged(tmp_path / 'delta', tmp_path / 'full.npz')
  merged, want = dict(np.load(out['merged'])), dict(np.load(workdir / 'merged.npz'))
  assert sorted(merged) == sorted(want)
  for k in want:
    np.testing.assert_array_equal(merged[k], want[k])    # bitwise
  assert out['delta_bytes'] < 0.5 * out['merged_bytes']


def test_lora_delta_merges_to_the_lora_models_outputs(peft_run, tmp_path):
  from sparsejax.programs import peft_checkpoint as pc
  workdir, _ = peft_run('lora')
  pc.save_delta(workdir, tmp_path / 'delta')
  with np.load(tmp_path / 'delta' / 'delta.npz') as f:
    assert {k.split('/')[0] for k in f.files} == {'head', 'lora_a', 'lora_b'}
    assert f['lora_a/hidden_0/kernel'].shape == (40, 2)
  params, _ = pc.merge(tmp_path / 'delta')
  state = final(workdir)
  task = experiment.build_task(cfg(**{'finetune.method': 'lora', **PEFT}))
  method = pc.method_from_json(json.loads((workdir / 'peft.json').read_text()))
  x = task.dataset.test.get(np.arange(128))[0]
  lora_out = jax.jit(lambda v, x: peft.Reparametrized(task.model, method).apply(v, x))(
      {'params': state['params'], 'frozen': state['model_state']['frozen']}, x)
  merged_out = jax.jit(task.model.apply)({'params': params}, x)
  np.testing.assert_allclose(merged_out, lora_out, atol=1e-5, rtol=0)
  assert pc.sizes(tmp_path / 'delta')['ratio'] < 0.6


def test_delta_refuses_another_base_naming_both_hashes(pretrained, peft_run, tmp_path):
  from sparsejax.programs import peft_base, peft_checkpoint as pc
  from sparsejax.train import weights as weights_lib
  pc.save_delta(peft_run('row')[0], tmp_path / 'delta')
  want = peft_base.sha256_of(inspection.resolve(pretrained))
  params = final(pretrained)['params']
  params['hidden_0']['kernel'][0, 0] += 1.0
  other = weights_lib.write_npz(tmp_path / 'other.npz', params)
  got = peft_base.sha256_of(other)
  with pytest.raises(pc.DeltaError, match=f'{other}.*{got}.*{want}'):
    pc.merge(tmp_path / 'delta', other)


def test_delta_and_merge_on_the_command_line(pretrained, peft_run, tmp_path, capsys):
  from sparsejax import cli
  workdir, _ = peft_run('row')
  assert cli.main(['export', str(workdir), '--peft-delta', '--out', str(tmp_path / 'd')]) == 0
  out = capsys.readouterr().out
  assert 'row delta' in out and 'bytes on disk' in out and '0.00e+00' in out
  assert cli.main(['merge', str(tmp_path / 'd'), '--out', str(tmp_path / 'full.npz')]) == 0
  out = capsys.readouterr().out
  assert f"{(tmp_path / 'full.npz').stat().st_size:,} bytes" in out
  merged, want = dict(np.load(tmp_path / 'full.npz')), dict(np.load(workdir / 'merged.npz'))
  assert all(np.array_equal(merged[k], want[k]) for k in want)
  assert cli.main(['merge', str(tmp_path / 'd'), '--out', str(tmp_path / 'x.npz'),
                   '--base', str(tmp_path / 'full.npz')]) == 2
  assert 'refusing to merge' in capsys.readouterr().err
  assert not (tmp_path / 'x.npz').exists()


@pytest.mark.parametrize('kind', ['row', 'lora', 'unstructured'])
def test_delta_of_a_bert_safetensors_base(tmp_path, kind):
  """A base in HuggingFace BERT layout (as MiniLM's): mapped onto the model's
  leaves, the delta a small part of it, merged as the Method merges."""
  save_file = pytest.importorskip('safetensors.numpy').save_file
  from sparsejax.models import bert, safetensors_io as sio
  from sparsejax.programs import peft_base, peft_checkpoint as pc
  model = bert.BertEncoder(vocab_size=500, hidden=64, num_layers=2, num_heads=2,
                           intermediate=128, max_len=16, num_classes=3)
  params = jax.device_get(model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))['params'])
  flat = dict(tree_lib.leaves_with_paths(params))
  save_file({key: np.ascontiguousarray(fn(flat[path]) if fn else flat[path])
             for key, path, fn in sio.bert_mapping(2)}, str(tmp_path / 'base.safetensors'))
  targets = tuple(peft.target_paths(params, r'attention/(query|value)/kernel'))
  head = ('output/bias', 'output/kernel')
  method = peft.Method(kind, targets, head, rows=((1, 5),) * len(targets) if kind == 'row'
                       else (), entries=((3, 70, 900),) * len(targets)
                       if kind == 'unstructured' else (), rank=2, scale=0.5)
  trainable = method.init_trainable(params, jax.random.key(1))
  trainable = jax.tree.map(lambda x: np.asarray(x) + np.asarray(jax.random.normal(
      jax.random.key(2), x.shape)), jax.device_get(trainable))
  rep = pc.write_delta(tmp_path / 'delta', method, trainable, params,
                       peft_base.base_reference(str(tmp_path / 'base.safetensors')))
  assert rep['ratio'] < 0.05
  merged, _ = pc.merge(tmp_path / 'delta')
  want = method.merged_params(params, trainable)
  for (p, a), (_, b) in zip(tree_lib.leaves_with_paths(merged), tree_lib.leaves_with_paths(want)):
    np.testing.assert_array_equal(a, b, err_msg=p)
