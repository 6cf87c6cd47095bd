"""Bring your own model, loss and data: defined here, outside the package, and
run through train, lottery, fine-tuning, a sweep, the report and export, from
Python and from a config (import paths 'test_own:OwnNet')."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax import config as config_lib, experiment
from sparsejax.data import ArraySource, Dataset
from sparsejax.programs import export, export_formats, finetune, grid, lottery, report
from sparsejax.train import loop
from sparsejax.train.task import LoopSettings, SetupError, Task, nnx_model


class OwnNet(nn.Module):
  """A user's Linen model: no `train` argument, its own layer names."""
  width: int = 32
  classes: int = 4

  @nn.compact
  def __call__(self, x):
    x = nn.gelu(nn.Dense(self.width, name='inp')(x))
    return nn.Dense(self.classes, name='head')(x)


class OwnNNX(nnx.Module):
  def __init__(self, rngs, width=32):
    self.inp = nnx.Linear(8, width, rngs=rngs)
    self.head = nnx.Linear(width, 4, rngs=rngs)

  def __call__(self, x):
    return self.head(nnx.gelu(self.inp(x)))


def own_loss(outputs, labels):
  """A user's per-example loss: label-smoothed cross-entropy."""
  return optax.softmax_cross_entropy(outputs, optax.smooth_labels(jax.nn.one_hot(labels, 4), 0.1))


def own_dataset(n=256, seed=0):
  """A user's data: 4 Gaussian blobs in 8 dimensions."""
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 4, n).astype(np.int32)
  centers = rng.normal(size=(4, 8)).astype(np.float32) * 3
  x = centers[y] + rng.normal(size=(n, 8)).astype(np.float32)
  cut = n * 3 // 4
  return Dataset('blobs', ArraySource(x[:cut], y[:cut]), ArraySource(x[cut:], y[cut:]), None,
                 num_classes=4, input_shape=(8,), input_dtype=np.float32)


def own_task(**changes):
  base = dict(dataset=own_dataset(), optimizer=optax.adam(1e-2), model=OwnNet(),
              output_loss=own_loss, batch_size=32, eval_batch_size=64,
              loop=LoopSettings(steps=40, log_every=10, eval_every=40, checkpoint_every=40))
  return Task(**{**base, **changes})


def zeros_exact(params, masks):
  from sparsejax.core import tree as tree_lib
  flat = dict(tree_lib.leaves_with_paths(params))
  checked = 0
  for path, m in tree_lib.leaves_with_paths(masks):
    if m is not None:
      assert np.all(np.asarray(flat[path])[~np.asarray(m)] == 0.0), path
      checked += 1
  assert checked == 2


def test_own_train_from_python(tmp_path):
  result = loop.train(own_task(schedule=sj.make_schedule('gradual', sparsity=0.75, end=30,
                                                         every=10)), tmp_path, progress=False)
  assert result.summary['density'] == pytest.approx(0.25, abs=0.01)
  assert result.summary['eval']['test']['accuracy'] > 0.6
  zeros_exact(jax.device_get(result.state.params), jax.device_get(result.masks))
  again = loop.train(own_task(schedule=sj.make_schedule('gradual', sparsity=0.75, end=30,
                                                        every=10)), tmp_path, progress=False)
  assert again.summary['resumed_from'] == 40     # a finished run is restored, not retrained


def test_own_loss_of_params_batch_rng_and_nnx_model(tmp_path):
  model = OwnNet()

  def loss(params, batch, rng):
    del rng
    out = model.apply({'params': params}, batch[0])
    return jnp.mean(own_loss(out, batch[1])), {'accuracy': jnp.mean(out.argmax(-1) == batch[1])}

  init = lambda key: model.init(key, jnp.zeros((1, 8)))['params']
  result = loop.train(own_task(model=None, init=init, loss=loss,
                               schedule=sj.make_schedule('oneshot', sparsity=0.5)),
                      tmp_path / 'fn', progress=False)
  assert result.summary['eval']['test']['accuracy'] > 0.6
  assert result.summary['density'] == pytest.approx(0.5, abs=0.01)
  nnx_result = loop.train(own_task(model=nnx_model(OwnNNX(nnx.Rngs(0))),
                                   schedule=sj.make_schedule('rigl', sparsity=0.5, every=10,
                                                             end=30)),
                          tmp_path / 'nnx', progress=False)
  assert nnx_result.summary['density'] == pytest.approx(0.5, abs=0.01)
  assert nnx_result.summary['eval']['test']['accuracy'] > 0.6


def test_own_lottery_finetune_sweep_report_export(tmp_path):
  task = own_task()
  rows = lottery.run_lottery(task, tmp_path / 'lottery',
                             lottery.Lottery(levels=2, prune_fraction=0.5,
                                             controls=('random_prune',)),
                             log=lambda s: None)
  tickets = [r for r in rows if r['arm'] == 'ticket']
  assert [round(r['density'], 2) for r in tickets] == [1.0, 0.5, 0.25]
  assert len(rows) == 5
  text = report.report(tmp_path / 'lottery')
  assert 'ticket' in text and 'random_prune' in text
  # fine-tune the dense level-0 weights after one-shot pruning to 80%
  dense = loop.train(task, tmp_path / 'dense', progress=False)
  params = jax.device_get(dense.state.params)
  row = finetune.prune_then_finetune(task.replace(schedule=sj.make_schedule('oneshot',
                                                                            sparsity=0.8)),
                                     params, tmp_path / 'ft')
  assert row['density'] == pytest.approx(0.2, abs=0.01) and row['after_pruning'] is not None
  # a 2-point sweep of tasks, then its report
  points = {f'rigl_{s}': task.replace(schedule=sj.make_schedule('rigl', sparsity=s, every=10,
                                                                end=30))
            for s in (0.5, 0.8)}
  swept = grid.run_grid(points, tmp_path / 'sweep', log=lambda s: None)
  assert [r['status'] for r in swept] == ['ok', 'ok']
  assert 'rigl_0.5' in report.report(tmp_path / 'sweep')
  # export the fine-tuned model and check its outputs
  final = json.loads((tmp_path / 'ft' / 'summary.json').read_text())
  assert final['density'] == pytest.approx(0.2, abs=0.01)
  from sparsejax.programs import results
  p, ms, masks = results.final_weights(tmp_path / 'ft')
  rep = export_formats.write_export(p, ms, masks, 'csr', tmp_path / 'export')
  assert rep['leaves']['inp/kernel'] == 'csr' and rep['leaves']['inp/bias'] == 'dense'
  x = task.dataset.test.get(np.arange(16))[0]
  assert export.verify(task.model.apply, p, ms, x, tmp_path / 'export') < 1e-5


def test_own_pieces_from_a_config(tmp_path):
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'model.name': 'test_own:OwnNet', 'model.options': {'width': 16},
      'data.name': 'test_own:own_dataset', 'data.options': {'n': 128},
      'loss.name': 'test_own:own_loss', 'data.batch_size': 32, 'data.eval_batch_size': 32,
      'optimizer.name': 'sgd', 'optimizer.learning_rate': 0.1,
      'optimizer.options': {'momentum': 0.9}, 'optimizer.chain': (('clip_by_global_norm',
                                                                   {'max_norm': 1.0}),),
      'pruning.schedule': 'set', 'sparsity': 0.5, 'pruning.every': 5, 'pruning.end': 0.75,
      'train.steps': 20, 'train.eval_every': 20, 'train.checkpoint_every': 20})
  summary = experiment.train_and_evaluate(c, tmp_path / 'train', progress=False)
  assert summary['density'] == pytest.approx(0.5, abs=0.01)
  assert summary['schedule']['grow'] == 'random'
  with pytest.raises(config_lib.ConfigError, match="model.options.depth.*'width'"):
    experiment.train_and_evaluate(config_lib.apply_overrides(c, {'model.options': {'depth': 2}}),
                                  tmp_path / 'bad', progress=False)
  lot = config_lib.apply_overrides(c, {'pruning.schedule': 'dense', 'sparsity': 0.0,
                                       'pruning.every': None, 'pruning.end': None,   # unset
                                       'lottery.levels': 1, 'lottery.prune_fraction': 0.5})
  rows = experiment.run_lottery(lot, tmp_path / 'lottery', log=lambda s: None)
  assert [round(r['density'], 2) for r in rows] == [1.0, 0.5]


def test_nnx_factory_draws_from_the_seed_and_the_lottery_reinit_uses_new_weights(tmp_path):
  """An NNX model given as a factory draws its weights from the key, so the
  lottery's reinit control starts from weights other than the ticket's; a
  built NNX module cannot, and the lottery refuses it rather than reuse them."""
  model = nnx_model(lambda rngs: OwnNNX(rngs))
  assert model.redraws
  a, b = (model.init({'params': jax.random.key(k)}, None)['params'] for k in (0, 1))
  assert all(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
             if np.asarray(x).any())
  task = own_task(model=model).with_loop(steps=20, eval_every=20, checkpoint_every=20)
  rows = lottery.run_lottery(task, tmp_path / 'lottery',
                             lottery.Lottery(levels=1, prune_fraction=0.5, controls=('reinit',)),
                             log=lambda s: None)
  assert [(r['level'], r['arm']) for r in rows] == [(0, 'ticket'), (1, 'ticket'), (1, 'reinit')]
  from sparsejax.programs import results
  level = tmp_path / 'lottery' / 'replicate_0' / 'level_1'
  ticket, _ = results.named_weights(level / 'ticket', 'init')
  reinit, _ = results.named_weights(level / 'reinit', 'init')
  for path in ('inp', 'head'):
    t, r = np.asarray(ticket[path]['kernel']), np.asarray(reinit[path]['kernel'])
    assert np.array_equal(t == 0, r == 0)             # the same mask
    assert not np.array_equal(t, r)                   # other weights under it
  built = own_task(model=nnx_model(OwnNNX(nnx.Rngs(0))))
  assert not built.model.redraws
  with pytest.raises(SetupError, match="'reinit' control needs new random weights"):
    lottery.run_lottery(built, tmp_path / 'refused', lottery.Lottery(levels=1,
                                                                     controls=('reinit',)))
  assert not (tmp_path / 'refused').exists()


class OwnCNN(nnx.Module):
  """A user's NNX class with an `nnx.Conv`, given to configs by import path."""

  def __init__(self, rngs, num_classes=4, width=4):
    self.conv = nnx.Conv(1, width, (3,), rngs=rngs)
    self.head = nnx.Linear(8 * width, num_classes, rngs=rngs)

  def __call__(self, x):
    x = nnx.relu(self.conv(x[..., None]))
    return self.head(x.reshape(x.shape[0], -1))


def test_nnx_class_by_import_path_gets_its_rngs_from_the_seed():
  c = config_lib.apply_overrides(config_lib.default_config(), {
      'model.name': 'test_own:OwnCNN', 'model.options': {'width': 2},
      'data.name': 'test_own:own_dataset', 'data.options': {'n': 64}, 'data.batch_size': 16})
  task = experiment.build_task(c)
  assert task.model.redraws
  params = [task.with_loop(seed=s).init_variables(jax.random.key(s))['params'] for s in (0, 1)]
  assert params[0]['conv']['kernel'].shape == (3, 1, 2)
  assert params[0]['head']['kernel'].shape == (16, 4)       # num_classes from the data
  assert not np.array_equal(params[0]['conv']['kernel'], params[1]['conv']['kernel'])
  with pytest.raises(config_lib.ConfigError, match="model.options.depth.*'width'"):
    experiment.build_task(config_lib.apply_overrides(c, {'model.options': {'depth': 2}}))


class TwelveLayers(nnx.Module):
  """A stack in an nnx.List: its pure-dict keys are 0..11, which a checkpoint
  or an export may hand back as strings ('10' sorts before '2')."""

  def __init__(self, rngs):
    self.layers = nnx.List([nnx.Linear(8, 8, rngs=rngs) for _ in range(11)] +
                           [nnx.Linear(8, 4, rngs=rngs)])

  def __call__(self, x):
    for layer in self.layers[:-1]:
      x = nnx.relu(layer(x))
    return self.layers[-1](x)


def test_nnx_leaves_are_matched_by_path_not_order():
  model = nnx_model(TwelveLayers)
  params = model.init({'params': jax.random.key(0)}, None)['params']
  x = jnp.ones((2, 8))
  want = model.apply({'params': params}, x)
  as_strings = {'layers': {str(k): v for k, v in params['layers'].items()}}
  np.testing.assert_array_equal(model.apply({'params': as_strings}, x), want)
