"""Post-training pruning (sparsejax.posttrain): Wanda against a numpy reference,
SparseGPT's exact patterns, exact zeros and lower reconstruction error, the
layer-by-layer driver on a tiny Transformer, and the checkpoint that
`sparsejax prune` writes, loaded back for fixed-mask fine-tuning."""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sparsejax import cli, experiment, prune_run
from sparsejax.core import masks as masks_lib, schedules, tree as tree_lib
from sparsejax.models.bert import BertEncoder
from sparsejax.models.transformer import TransformerDecoder, TransformerEncoder
from sparsejax.posttrain import (Target, inverse_hessian_factor, prune_magnitude,
                                 prune_model, prune_sparsegpt, prune_wanda,
                                 reconstruction_error)
from sparsejax.train import weights as weights_lib


def layer(n_in=64, n_out=32, tokens=512, seed=0):
  """A kernel (in, out) and calibration inputs whose features differ in scale
  (a few large, as in LLM activations) and are correlated."""
  rng = np.random.default_rng(seed)
  mix = np.eye(n_in) + 0.3 * rng.normal(size=(n_in, n_in))
  x = (rng.normal(size=(tokens, n_in)) @ mix * np.exp(rng.normal(size=n_in))).astype(np.float32)
  kernel = rng.normal(size=(n_in, n_out)).astype(np.float32)
  return kernel, x, x.T.astype(np.float64) @ x


def numpy_wanda_mask(kernel, x, n_prune=None, nm=None):
  """Wanda by hand: |W_ij| ||X_j||, the lowest pruned in each output column,
  or the best n of every m consecutive inputs."""
  score = np.abs(kernel) * np.sqrt(np.sum(x.astype(np.float64) ** 2, axis=0))[:, None]
  keep = np.ones(kernel.shape, bool)
  if nm is None:
    for o in range(kernel.shape[1]):
      keep[np.argsort(score[:, o], kind='stable')[:n_prune], o] = False
  else:
    n, m = nm
    for o in range(kernel.shape[1]):
      for g in range(0, kernel.shape[0], m):
        keep[g + np.argsort(score[g:g + m, o], kind='stable')[:m - n], o] = False
  return keep


@pytest.mark.parametrize('target', [Target(0.5), Target(nm='2:4')], ids=['0.5', '2:4'])
def test_wanda_mask_equals_numpy_reference(target):
  kernel, x, gram = layer()
  pruned, mask = prune_wanda(jnp.asarray(kernel), jnp.asarray(gram, jnp.float32), target)
  want = (numpy_wanda_mask(kernel, x, n_prune=32) if target.nm is None
          else numpy_wanda_mask(kernel, x, nm=(2, 4)))
  np.testing.assert_array_equal(np.asarray(mask), want)
  np.testing.assert_array_equal(np.asarray(pruned), np.where(want, kernel, 0.0))


@pytest.mark.parametrize('target', [Target(0.5), Target(nm='2:4'), Target(nm='4:8')],
                         ids=['0.5', '2:4', '4:8'])
def test_sparsegpt_exact_pattern_zeros_and_lowest_error(target):
  kernel, _, gram = layer()
  pruned, mask = prune_sparsegpt(jnp.asarray(kernel), gram, target)
  pruned, mask = np.asarray(pruned), np.asarray(mask)
  if target.nm is None:     # the layer loses exactly half, chosen jointly (the paper's)
    assert np.sum(~mask) == 1024 and len(set(np.sum(~mask, axis=0))) > 1
    _, per_row = prune_sparsegpt(jnp.asarray(kernel), gram, target, per_row=True)
    # per_row: every output neuron (kernel column) loses exactly half
    np.testing.assert_array_equal(np.sum(~np.asarray(per_row), axis=0), np.full(32, 32))
  else:                     # n of every m consecutive inputs of every output neuron
    n, m = target.nm.n, target.nm.m
    np.testing.assert_array_equal(mask.reshape(64 // m, m, 32).sum(1), n)
  assert np.all(pruned[~mask] == 0.0) and np.all(pruned[mask] != 0.0)
  errors = {'sparsegpt': reconstruction_error(kernel, pruned, gram)[1]}
  for name, fn in (('wanda', prune_wanda), ('magnitude', prune_magnitude)):
    errors[name] = reconstruction_error(kernel, np.asarray(fn(kernel, gram, target)[0]),
                                        gram)[1]
  print(target.describe(), {k: round(v, 4) for k, v in errors.items()})
  assert errors['sparsegpt'] < errors['wanda'] < errors['magnitude']


def naive_sparsegpt(kernel, gram, n, m, percdamp=0.01):
  """SparseGPT without blocks or lazy updates, in float64: for every input j,
  choose the N:M group's mask on reaching it, zero the pruned weights and
  spread the error over all later inputs at once."""
  w = kernel.T.astype(np.float64)
  u = inverse_hessian_factor(gram, percdamp)
  keep = np.ones(w.shape, bool)
  for j in range(w.shape[1]):
    if j % m == 0:
      s = w[:, j:j + m] ** 2 / np.diag(u)[j:j + m] ** 2
      ranks = np.argsort(np.argsort(-s, axis=1, kind='stable'), axis=1)
      keep[:, j:j + m] = ranks < n
    q = np.where(keep[:, j], w[:, j], 0.0)
    w[:, j:] -= np.outer((w[:, j] - q) / u[j, j], u[j, j:])
    w[:, j] = q
  return w.T, keep.T


def test_sparsegpt_blocks_and_lazy_updates_match_the_plain_sweep():
  kernel, _, gram = layer()
  want, want_mask = naive_sparsegpt(kernel, gram, 2, 4)
  got, mask = prune_sparsegpt(jnp.asarray(kernel), gram, Target(nm='2:4'), blocksize=16)
  np.testing.assert_array_equal(np.asarray(mask), want_mask)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-4, atol=2e-5)


def dense_inputs_grams(model, params, batches):
  """{kernel path: X^T X of that Dense's inputs} in a forward pass of `params`."""
  import flax.linen as nn
  grams = {}

  def interceptor(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      x = np.asarray(args[0], np.float64).reshape(-1, args[0].shape[-1])
      path = '/'.join(context.module.path) + '/kernel'
      grams[path] = grams.get(path, 0.0) + x.T @ x
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(interceptor):
    for x in batches:
      model.apply({'params': params}, x, train=False)
  return grams


def tiny():
  """A 2-block causal Transformer whose matrices are all 32x32, and 3 batches."""
  model = TransformerDecoder(vocab_size=32, max_len=16, d_model=32, num_heads=4,
                             num_layers=2, mlp_dim=32)
  batches = list(jax.random.randint(jax.random.key(1), (3, 4, 16), 0, 32))
  return model, batches, model.init(jax.random.key(0), batches[0])['params']


@pytest.mark.parametrize('method,target', [('sparsegpt', {'sparsity': 0.5}),
                                           ('wanda', {'nm': '2:4'}),
                                           ('magnitude', {'sparsity': 0.5})])
def test_layer_by_layer_driver_on_a_tiny_transformer(method, target):
  model, batches, params = tiny()
  pruned, masks, report = prune_model(model, params, batches, method, **target)
  masks_lib.validate_masks(masks, pruned)
  kernels = [f'block_{b}/{p}/kernel' for b in range(2) for p in (
      'attention/query', 'attention/key', 'attention/value', 'attention/out',
      'mlp/fc_in', 'mlp/fc_out')]
  assert [row['path'] for row in report['layers']] == kernels   # call order, block by block
  assert sorted(report['left_dense']) == ['embed/embedding', 'output/kernel',
                                          'pos_embed/embedding']
  flat_m, flat_p, flat_0 = (dict(tree_lib.leaves_with_paths(t)) for t in (masks, pruned, params))
  for path in kernels:
    mask = np.asarray(flat_m[path])
    assert mask.mean() == 0.5, path
    if method == 'wanda':   # N:M, so per output neuron too
      np.testing.assert_array_equal((~mask).sum(0), 16)
    assert np.all(np.asarray(flat_p[path])[~mask] == 0.0)
  for path, value in flat_0.items():   # biases, norms, embeddings, head: untouched
    if path not in kernels:
      np.testing.assert_array_equal(np.asarray(flat_p[path]), np.asarray(value))
  if method == 'sparsegpt':
    # Every layer was pruned against the inputs it gets in the final pruned
    # model: those of the already-pruned layers (and blocks) before it.
    grams = dense_inputs_grams(model, pruned, batches)
    for row in report['layers']:
      err = reconstruction_error(flat_0[row['path']], flat_p[row['path']],
                                 grams[row['path']])[0]
      assert err == pytest.approx(row['error'], rel=1e-3), row['path']


def test_padding_tokens_are_left_out_of_bert_statistics():
  model = BertEncoder(vocab_size=32, hidden=32, num_layers=1, num_heads=4,
                      intermediate=32, max_len=16)
  tokens = np.zeros((2, 16), np.int32)
  tokens[0, :3], tokens[1, :5] = [5, 6, 7], [8, 9, 10, 11, 12]
  params = model.init(jax.random.key(0), jnp.asarray(tokens))['params']
  _, masks, report = prune_model(model, params, [tokens], 'wanda', nm='2:4',
                                 valid_tokens=lambda x: x != 0)
  assert report['calibration_tokens'] == 8
  assert report['blocks'] == ['layer_0'] and len(report['layers']) == 6
  # Less padding, same real tokens: the same statistics, so the same masks.
  _, masks_short, _ = prune_model(model, params, [tokens[:, :8]], 'wanda', nm='2:4',
                                  valid_tokens=lambda x: x != 0)
  for a, b in zip(jax.tree.leaves(masks), jax.tree.leaves(masks_short)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bad_targets_are_errors_before_any_work():
  for bad in ({}, {'sparsity': 0.5, 'nm': '2:4'}, {'sparsity': 1.0}, {'nm': '2-4'},
              {'nm': (4, 2)}):
    with pytest.raises(ValueError):
      Target(**bad)
  model, batches, params = tiny()
  with pytest.raises(ValueError, match=r'block_0/\w+/\w+/kernel'):
    prune_model(model, params, batches, 'wanda', nm='2:5')     # 32 inputs: no groups of 5
  with pytest.raises(ValueError, match='unknown pruning method'):
    prune_model(model, params, batches, 'obs', sparsity=0.5)
  with pytest.raises(ValueError, match="sparsegpt takes no option 'per_rows'"):
    prune_model(model, params, batches, 'sparsegpt', sparsity=0.5, options={'per_rows': True})
  with pytest.raises(ValueError, match="wanda takes no option 'per_row'"):
    prune_model(model, params, batches, 'wanda', sparsity=0.5, options={'per_row': True})


CONFIG = '''
from sparsejax.config import default_config

def get_config():
  c = default_config()
  c.data.name = 'npz'
  c.data.options = {{'path': {path!r}}}
  c.data.batch_size = 16
  c.data.eval_batch_size = 32
  c.model.name = 'transformer_encoder'
  c.model.options = {{'d_model': 32, 'num_heads': 4, 'num_layers': 2, 'mlp_dim': 32,
                     'max_len': 16}}
  c.pruning.include = r'block_\\d+/(attention|mlp)/.*kernel'
  return c
'''


def write_cli_inputs(tmp_path):
  """(config file, trained weights file) of a 2-block encoder on random data."""
  rng = np.random.default_rng(0)
  data = tmp_path / 'data.npz'
  np.savez(data, x_train=rng.normal(size=(64, 16)).astype(np.float32),
           y_train=rng.integers(0, 3, 64), x_test=rng.normal(size=(32, 16)).astype(np.float32),
           y_test=rng.integers(0, 3, 32))
  config = tmp_path / 'config.py'
  config.write_text(CONFIG.format(path=str(data)))
  model = TransformerEncoder(max_len=16, d_model=32, num_heads=4, num_layers=2, mlp_dim=32,
                             num_classes=3)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16)))['params']
  weights_lib.write_npz(tmp_path / 'trained.npz', params)
  return config, params


def test_cli_writes_a_checkpoint_that_fixed_mask_fine_tuning_loads(tmp_path, capsys):
  config, params = write_cli_inputs(tmp_path)
  out = tmp_path / 'pruned'
  assert cli.main(['prune', '--config', str(config), '--workdir', str(out), '--method',
                   'sparsegpt', '--nm', '2:4', '--calibration', '40',
                   '--from', str(tmp_path / 'trained.npz')]) == 0
  assert 'sparsegpt 2:4: 12 matrices pruned' in capsys.readouterr().out
  pruned, masks = prune_run.load_pruned(out)
  # What `finetune.init_from=<out>` reads, checked against the model's structure.
  loaded, _ = weights_lib.load_weights(out, jax.eval_shape(lambda: params))
  for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(pruned)):
    np.testing.assert_array_equal(a, b)
  rule = tree_lib.PrunableRule(include=r'block_\d+/(attention|mlp)/.*kernel')
  for path, m in tree_lib.leaves_with_paths(masks):
    assert path.startswith('block_') and m.mean() == 0.5
    np.testing.assert_array_equal(m.reshape(8, 4, 32).sum(1), 2)
  # The fixed mask taken from the checkpoint's zeros is the mask it holds.
  from_zeros = masks_lib.masks_from_zeros(loaded, rule)
  for a, b in zip(jax.tree.leaves(from_zeros), jax.tree.leaves(masks)):
    np.testing.assert_array_equal(np.asarray(a), b)
  schedules.FixedMask(masks=masks).init(jax.tree.map(jnp.asarray, loaded), rule)
  record = json.loads((out / 'prune.json').read_text())
  assert set(record['report']['eval']) == {'dense', 'pruned'}
  assert pathlib.Path(record['report']['from']) == tmp_path / 'trained.npz'


def test_cli_owl_and_sparsegpt_per_row(tmp_path, capsys):
  config, _ = write_cli_inputs(tmp_path)
  base = ['prune', '--config', str(config), '--calibration', '40', '--from',
          str(tmp_path / 'trained.npz')]
  for argv, message in (
      (['--method', 'wanda', '--sparsity', '0.5', '--per-row'], '--per-row applies to sparsegpt'),
      (['--method', 'sparsegpt', '--nm', '2:4', '--per-row'], '--per-row applies to unstructured'),
      (['--method', 'wanda', '--nm', '2:4', '--owl'], '--owl allocates unstructured'),
      (['--method', 'wanda', '--sparsity', '0.5', '--owl-m', '3'], 'need --owl'),
      (['--method', 'wanda', '--sparsity', '0.5', '--owl', '--owl-lambda', '0.7'], 'lambda')):
    assert cli.main(base + ['--workdir', str(tmp_path / 'bad')] + argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith('sparsejax: ') and message in err and '\n' not in err, (argv, err)
  out = tmp_path / 'owl'
  assert cli.main(base + ['--workdir', str(out), '--method', 'wanda', '--sparsity', '0.5',
                          '--owl', '--owl-m', '3', '--owl-lambda', '0.05']) == 0
  assert 'OWL (M=3, lambda=0.05): block sparsities 0.4500..0.5500' in capsys.readouterr().out
  report = json.loads((out / 'prune.json').read_text())['report']
  assert sorted(report['owl']['sparsities'].values()) == pytest.approx([0.45, 0.55])
  out = tmp_path / 'per_row'
  assert cli.main(base + ['--workdir', str(out), '--method', 'sparsegpt', '--sparsity', '0.5',
                          '--per-row']) == 0
  report = json.loads((out / 'prune.json').read_text())['report']
  assert report['options'] == {'percdamp': 0.01, 'blocksize': 128, 'per_row': True}
  for row in report['layers']:
    assert row['sparsity'] == 0.5


@pytest.mark.parametrize('config_file', ['configs/transformer_lm_text.py',
                                         'experiments/lm_prune_text/config.py:prune'])
def test_printed_recovery_command_is_a_valid_fixed_mask_config(config_file):
  # The line `sparsejax prune` prints to retrain with the mask fixed used to
  # keep the config's own schedule settings (gradual's start/end/every) and
  # sparsity, which 'fixed' refuses: the repo's LM config failed with it.
  import shlex
  from sparsejax import config as config_lib
  root = pathlib.Path(__file__).resolve().parents[1]
  path = str(root / config_file)
  overrides = {'model.options.num_layers': '3'}
  config = config_lib.apply_overrides(config_lib.load_config(path), overrides)
  line = cli.recovery_command(path, config, overrides, '/tmp/pruned dir')
  argv = shlex.split(line)
  assert argv[:4] == ['sparsejax', 'finetune', '--config', path]
  _, got = config_lib.split_overrides(argv)
  assert got['model.options.num_layers'] == '3' and got['finetune.init_from'] == '/tmp/pruned dir'
  fine = config_lib.apply_overrides(config_lib.load_config(path), got)
  config_lib.check_keys(fine)
  s = config_lib.to_settings(fine)
  schedule = experiment.build_schedule(s.pruning, s.seed)
  assert isinstance(schedule, schedules.FixedMask) and schedule.needs_start
  assert s.model.options['num_layers'] == 3
