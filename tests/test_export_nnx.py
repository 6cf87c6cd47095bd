"""Export verification that is right for NNX models and fails loudly: sparse
products in nnx.Linear layers, an error (never a placeholder product) for a
sparse kernel no intercepted layer uses, and command-line checks that exit
non-zero past their tolerance."""

import re
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.experimental import sparse

import sparsejax as sj
from sparsejax import cli, config as config_lib, experiment
from sparsejax.data import ArraySource, Dataset
from sparsejax.programs import export, export_check, export_formats, sparse_inference as si
from sparsejax.train import loop
from sparsejax.train.task import LoopSettings, Task, nnx_model


class CNN(nnx.Module):
  """8x8x1 images: a 3x3 conv to 4 channels, flatten, two Linear layers."""

  def __init__(self, rngs, num_classes=10):
    self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
    self.hidden = nnx.Linear(8 * 8 * 4, 32, rngs=rngs)
    self.head = nnx.Linear(32, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.conv(x))
    x = nnx.relu(self.hidden(x.reshape(x.shape[0], -1)))
    return self.head(x)


class OwnMatmul(nn.Module):
  """A Linen model multiplying by a 2-D kernel of its own, outside nn.Dense."""
  num_classes: int = 4

  @nn.compact
  def __call__(self, x):
    x = x.reshape(x.shape[0], -1)
    w = self.param('w', nn.initializers.lecun_normal(), (x.shape[-1], 16))
    return nn.Dense(self.num_classes)(nn.relu(x @ w))


def images(n=96, seed=0):
  """10 classes of noisy 8x8x1 images (a fixed pattern per class)."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 10, n).astype(np.int32)
  x = (rng.normal(size=(10, 8, 8, 1))[y] + 0.3 * rng.normal(size=(n, 8, 8, 1))).astype(np.float32)
  cut = n * 3 // 4
  return Dataset('images', ArraySource(x[:cut], y[:cut]), ArraySource(x[cut:], y[cut:]), None,
                 num_classes=10, input_shape=(8, 8, 1), input_dtype=np.float32)


def pruned_cnn():
  model = nnx_model(CNN(nnx.Rngs(0)))
  params = model.init(None, None)['params']
  pruned, masks = sj.prune(params, 0.8)
  x = jnp.asarray(images().test.get(np.arange(16))[0])
  return model, pruned, masks, x


@pytest.mark.parametrize('fmt', ['csr', 'ell'])
def test_nnx_cnn_export_verifies_with_sparse_products(tmp_path, fmt):
  model, pruned, masks, x = pruned_cnn()
  rep = export_formats.write_export(pruned, {}, masks, fmt, tmp_path)
  assert rep['leaves']['hidden/kernel'] == fmt and rep['leaves']['head/kernel'] == fmt
  assert rep['leaves']['conv/kernel'] == 'dense'        # 4-D: stored dense, zeros included
  assert export.verify(model.apply, pruned, {}, x, tmp_path) <= 1e-5   # was 0.73: zero kernels
  check = export_check.verify_report(model.apply, pruned, {}, x, tmp_path)
  assert check['ok'] and check['sparse_products'] and not check['dense_leaves']
  assert check['max_abs_diff'] <= 1e-5
  loaded, _ = export.load(tmp_path)
  got = jax.jit(lambda p, x: export.sparse_apply(model.apply, p, x))(loaded, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(model.apply({'params': pruned}, x)),
                             atol=1e-5)


def test_nnx_sparse_kernels_are_the_ones_multiplied(tmp_path):
  model, pruned, masks, x = pruned_cnn()
  export_formats.write_export(pruned, {}, masks, 'csr', tmp_path)
  loaded, _ = export.load(tmp_path)
  head = loaded['head']['kernel']
  assert isinstance(head, sparse.BCOO)
  doubled = {**loaded, 'head': {**loaded['head'], 'kernel': sparse.BCOO(
      (head.data * 2, head.indices), shape=head.shape)}}
  got = export.sparse_apply(model.apply, doubled, x)
  want = model.apply({'params': {**pruned, 'head': {**pruned['head'],
                                                    'kernel': pruned['head']['kernel'] * 2}}}, x)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5)
  assert float(jnp.max(jnp.abs(got - model.apply({'params': pruned}, x)))) > 1e-2
  # ELL: one sparse_inference.matmul per Linear layer
  export_formats.write_export(pruned, {}, masks, 'ell', tmp_path / 'ell')
  loaded, _ = export.load(tmp_path / 'ell')
  calls = []
  real = si.matmul

  def counting(x, m, *a, **k):
    calls.append(m.shape)
    return real(x, m, *a, **k)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(si, 'matmul', counting)
    export.sparse_apply(model.apply, loaded, x)
  assert sorted(calls) == [(32, 10), (256, 32)]


def test_kernel_outside_dense_is_an_error_not_a_wrong_number(tmp_path):
  model = OwnMatmul()
  x = jax.random.normal(jax.random.key(1), (8, 12))
  pruned, masks = sj.prune(model.init(jax.random.key(0), x)['params'], 0.8)
  export_formats.write_export(pruned, {}, masks, 'csr', tmp_path)
  loaded, _ = export.load(tmp_path)
  with pytest.raises(export.ExportError, match="leaf 'w' is stored sparse.*as_sparse=False"):
    export.sparse_apply(model.apply, loaded, x)
  # verify checks the export loaded dense instead, and says so
  with pytest.warns(export_check.CheckedDense, match="'w'.*not exercised"):
    check = export_check.verify_report(model.apply, pruned, {}, x, tmp_path)
  assert check['ok'] and check['max_abs_diff'] <= 1e-5
  assert check['dense_leaves'] == ['w'] and not check['sparse_products']


class DenseBatchNorm(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
    return nn.Dense(4)(nn.relu(x))


def test_model_state_reaches_the_sparse_products(tmp_path):
  """BatchNorm statistics go with the sparse kernels (they were left out)."""
  model = DenseBatchNorm()
  x = jax.random.normal(jax.random.key(0), (8, 12))
  variables = model.init(jax.random.key(1), x)
  state = {'batch_stats': jax.tree.map(lambda a: a + 0.5, variables['batch_stats'])}
  pruned, masks = sj.prune(variables['params'], 0.8)
  export_formats.write_export(pruned, state, masks, 'csr', tmp_path)
  assert export.verify(model.apply, pruned, state, x, tmp_path, train=False) <= 1e-5
  loaded, loaded_state = export.load(tmp_path)
  got = export.sparse_apply(model.apply, loaded, x, model_state=loaded_state, train=False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(
      model.apply({'params': pruned, **state}, x, train=False)), atol=1e-5)


def test_tolerance_and_non_finite_outputs(tmp_path):
  assert export_check.tolerance(jnp.asarray([0.1, -0.5])) == pytest.approx(1e-5)
  assert export_check.tolerance(jnp.asarray([3.0, -200.0])) == pytest.approx(2e-3)
  model, pruned, masks, x = pruned_cnn()
  export_formats.write_export(pruned, {}, masks, 'csr', tmp_path)
  nan_head = {**pruned, 'head': {**pruned['head'], 'bias': pruned['head']['bias'] * jnp.nan}}
  check = export_check.verify_report(model.apply, nan_head, {}, x, tmp_path)
  assert np.isnan(check['max_abs_diff']) and not check['ok']     # NaN never passes


def config_run(workdir, **over):
  """A config-made run of the NNX CNN (by import path), pruned one-shot to 80%."""
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'model.name': 'test_export_nnx:CNN', 'data.name': 'test_export_nnx:images',
      'data.batch_size': 24, 'data.eval_batch_size': 24, 'train.steps': 12,
      'train.eval_every': 12, 'train.checkpoint_every': 12, 'train.log_every': 6,
      'sparsity': 0.8, 'pruning.schedule': 'oneshot', 'pruning.at_step': 4, **over})
  experiment.train_and_evaluate(c, workdir, progress=False)


def test_cli_export_of_an_nnx_run_and_a_failing_check(tmp_path, capsys, monkeypatch):
  config_run(tmp_path)
  capsys.readouterr()
  assert cli.main(['export', str(tmp_path), '--format', 'csr']) == 0
  out = capsys.readouterr().out
  assert 'hidden/kernel: csr' in out and re.search(r'\(tolerance \d\.\de-0\d\)', out)
  assert experiment.verify_export(tmp_path, tmp_path / 'export_csr') <= 1e-5
  assert cli.main(['export', str(tmp_path), '--format', 'ell']) == 0
  assert experiment.verify_export(tmp_path, tmp_path / 'export_ell', report=True)['ok']
  # a check past its tolerance: exit 1 and one sparsejax: line naming both numbers
  real = export_check.sparse_apply
  monkeypatch.setattr(export_check, 'sparse_apply', lambda *a, **k: real(*a, **k) + 10.7)
  capsys.readouterr()
  assert cli.main(['export', str(tmp_path), '--format', 'csr']) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith('sparsejax: export check failed')
  assert '1.07e+01' in err[0] and re.search(r'exceeds the tolerance \d\.\de-0\d', err[0])


def test_cli_export_says_when_sparse_products_were_not_exercised(tmp_path, capsys):
  config_run(tmp_path, **{'model.name': 'test_export_nnx:OwnMatmul'})
  capsys.readouterr()
  assert cli.main(['export', str(tmp_path), '--format', 'csr']) == 0
  captured = capsys.readouterr()
  assert 'sparse products not exercised: w stored sparse' in captured.out
  assert re.search(r'dense output\| on 24 test examples: \S+ \(tolerance \S+\)', captured.out)
  assert captured.err == ''


def test_cli_peft_delta_check_past_tolerance_exits_1(monkeypatch, capsys):
  from sparsejax.programs import peft_checkpoint
  rep = {'delta': 'd', 'method': 'row', 'delta_bytes': 10, 'full_array_bytes': 1000,
         'ratio': 0.01, 'merged_npz_bytes': 1000, 'max_abs_diff_vs_merged_npz': 3e-3}
  monkeypatch.setattr(peft_checkpoint, 'save_delta', lambda *a, **k: rep)
  assert cli.main(['export', 'somewhere', '--peft-delta']) == 1
  assert 'sparsejax: delta check failed' in capsys.readouterr().err
  monkeypatch.setattr(peft_checkpoint, 'save_delta',
                      lambda *a, **k: {**rep, 'max_abs_diff_vs_merged_npz': 0.0})
  assert cli.main(['export', 'somewhere', '--peft-delta']) == 0


def test_cli_export_of_a_python_run_is_said_unverified(tmp_path, capsys):
  task = Task(dataset=images(), optimizer=optax.adam(1e-2), model=nnx_model(CNN(nnx.Rngs(0))),
              schedule=sj.make_schedule('oneshot', sparsity=0.8, at_step=4),
              batch_size=24, eval_batch_size=24,
              loop=LoopSettings(steps=8, log_every=4, eval_every=8, checkpoint_every=8))
  loop.train(task, tmp_path, progress=False)
  capsys.readouterr()
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert cli.main(['export', str(tmp_path), '--format', 'ell']) == 0
  captured = capsys.readouterr()
  assert 'outputs not verified' in captured.out and 'export.verify(' in captured.out
  assert 'Traceback' not in captured.err and 'Traceback' not in captured.out
  # ... and from Python, as the line says
  from sparsejax.programs import results
  params, model_state, _ = results.final_weights(tmp_path)
  x = task.dataset.test.get(np.arange(16))[0]
  assert export.verify(task.model.apply, params, model_state, x,
                       tmp_path / 'export_ell') <= 1e-5
