"""Flax NNX models through the programs that look inside a model: parameter-
efficient fine-tuning (targets found by leaf path, LoRA and row deltas on
nnx.Linear kernels, the activation row score from the layers' inputs, the
delta and its merge), distillation (the KL term with an NNX model; the
hidden-state term refused before training) and post-training pruning (Wanda
and SparseGPT from the inputs of nnx.Linear layers). Every NNX result is
checked against a Linen model with the same weights or a numpy reference;
what cannot work (a target no Dense layer multiplies) is refused by name."""

import json
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import sparsejax as sj
from sparsejax.core import tree as tree_lib
from sparsejax.data.base import ArraySource, Dataset, batch_indices
from sparsejax.posttrain import blocks as blocks_lib, calibrate, prune_model
from sparsejax.programs import (export_formats, finetune, peft, peft_checkpoint, peft_select,
                                results)
from sparsejax.train import distill as distill_lib, loop, metrics as metrics_lib
from sparsejax.train import weights as weights_lib
from sparsejax.train.task import LoopSettings, SetupError, Task, nnx_model


class LinenNet(nn.Module):
  """Two Dense layers, width 16, and no `train` argument (as a user's model)."""
  @nn.compact
  def __call__(self, x):
    return nn.Dense(4, name='l2')(nn.relu(nn.Dense(16, name='l1')(x)))


class NNXNet(nnx.Module):
  def __init__(self, rngs):
    self.l1 = nnx.Linear(8, 16, rngs=rngs)
    self.l2 = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    return self.l2(nnx.relu(self.l1(x)))


def data(n=64, seed=0):
  """Inputs whose features differ in scale, so that the activation score
  (|W| times input norms) and the L2 score choose different rows."""
  rng = np.random.default_rng(seed)
  x = (rng.normal(size=(n, 8)) * np.linspace(0.1, 3.0, 8)).astype(np.float32)
  y = rng.integers(0, 4, n).astype(np.int32)
  return Dataset('toy', ArraySource(x, y), ArraySource(x, y), None, num_classes=4,
                 input_shape=(8,), input_dtype=np.float32)


DATA = data()


def task(model, **changes):
  return Task(**{**dict(dataset=DATA, model=model, optimizer=optax.adam(1e-2),
                        batch_size=16, eval_batch_size=64,
                        loop=LoopSettings(steps=4, log_every=4, eval_every=4,
                                          checkpoint_every=4)), **changes})


def pair():
  """(Linen model, NNX model, params): the same weights for both."""
  model = nnx_model(NNXNet(nnx.Rngs(0)))
  return LinenNet(), model, jax.device_get(model.init(None, None)['params'])


# --- parameter-efficient fine-tuning ------------------------------------------------------

def settings(init_from, **changes):
  base = dict(init_from=str(init_from), method='row', targets='kernel', head='', rows=4,
              rank=2, alpha=0.0, budget='per_layer', row_score='activation',
              score_batches=2, select='gradient', dense_steps=4, trainable=0)
  return peft.FinetuneSettings(**{**base, **changes})


def numpy_activation_rows(params, rows):
  """Top rows of sum_i |W_ij| ||X_i|| per kernel, X the inputs of each layer
  over the first two training batches (the score's batches)."""
  w1, b1, w2 = (np.asarray(params[k][n], np.float64) for k, n in
                (('l1', 'kernel'), ('l1', 'bias'), ('l2', 'kernel')))
  x = np.concatenate([DATA.train.x[batch_indices(64, 16, 0, i)] for i in range(2)])
  h = np.maximum(x @ w1 + b1, 0.0)
  out = {}
  for path, w, inp in (('l1/kernel', w1, x), ('l2/kernel', w2, h)):
    score = np.sum(np.abs(w) * np.linalg.norm(inp, axis=0)[:, None], axis=0)
    out[path] = sorted(np.argsort(-score, kind='stable')[:rows].tolist())
  return out


@pytest.mark.parametrize('method', ['row', 'lora', 'unstructured'])
def test_peft_on_nnx_linear_kernels_matches_linen(tmp_path, method):
  """Targets 'kernel' find the nnx.Linear kernels; the NNX run chooses the
  same rows (the activation score, against numpy) or weights, trains the same
  deltas and merges into the same model as the Linen run; the delta merges
  back onto the base. (Before: every NNX run died on rngs=, the activation
  score gave NNX zeros and so rows by index, and a Linen model without a
  `train` argument died on train=.)"""
  linen, model, params = pair()
  weights_lib.write_npz(tmp_path / 'base.npz', params)
  f = settings(tmp_path / 'base.npz', method=method, rows=3)
  merged, chosen = {}, {}
  for name, m in (('linen', linen), ('nnx', model)):
    row = peft.run_peft(task(m), f, tmp_path / name)
    assert row['peft']['targets'] == 2
    with np.load(tmp_path / name / 'merged.npz') as z:
      merged[name] = {k[len('params/'):]: z[k] for k in z.files}
    chosen[name] = json.loads((tmp_path / name / 'peft.json').read_text())
  assert chosen['nnx'] == chosen['linen']
  assert chosen['nnx']['targets'] == ['l1/kernel', 'l2/kernel']
  if method == 'row':
    want = numpy_activation_rows(params, 3)
    assert [list(r) for r in chosen['nnx']['rows']] == [want['l1/kernel'], want['l2/kernel']]
  for k, v in merged['linen'].items():
    np.testing.assert_allclose(merged['nnx'][k], v, rtol=1e-6, atol=1e-7, err_msg=k)
  assert any(not np.array_equal(merged['nnx'][k], params[k.split('/')[0]]['kernel'])
             for k in ('l1/kernel', 'l2/kernel'))     # the fine-tuning did change them
  nested = export_formats._nest(merged['nnx'])
  x = jnp.asarray(DATA.test.x[:8])
  np.testing.assert_allclose(model.apply({'params': nested}, x),
                             linen.apply({'params': nested}, x), rtol=1e-5, atol=1e-6)
  report = peft_checkpoint.save_delta(tmp_path / 'nnx', tmp_path / 'delta',
                                      base=str(tmp_path / 'base.npz'))
  assert report['max_abs_diff_vs_merged_npz'] == 0.0
  again, _ = peft_checkpoint.merge(tmp_path / 'delta')
  for p, v in tree_lib.leaves_with_paths(again):
    np.testing.assert_array_equal(v, merged['nnx'][p], err_msg=p)


def test_peft_of_a_task_without_a_model_is_refused(tmp_path):
  """Plain dict params with the task's own init and loss: no model to
  reparametrise, refused by name before any scoring (was an AttributeError
  on None)."""
  _, model, params = pair()
  weights_lib.write_npz(tmp_path / 'base.npz', params)

  def loss(p, batch, rng):
    out = model.apply({'params': p}, batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(out, batch[1]).mean()

  t = task(None, init=lambda key: params, loss=loss)
  for method in ('row', 'lora'):
    with pytest.raises(SetupError, match=f"finetune.method '{method}' reparametrises the "
                                         "task's model, but the task has none"):
      peft.run_peft(t, settings(tmp_path / 'base.npz', method=method), tmp_path / method)
    assert not (tmp_path / method / 'metrics.jsonl').exists()


def test_activation_input_norms_of_nnx_layers_equal_numpy():
  linen, model, params = pair()
  run = types.SimpleNamespace(task=task(model))
  got = peft_select.input_norms(run, params, {}, ['l1/kernel', 'l2/kernel'], 2)
  w1, b1 = np.asarray(params['l1']['kernel']), np.asarray(params['l1']['bias'])
  x = np.concatenate([DATA.train.x[batch_indices(64, 16, 0, i)] for i in range(2)])
  np.testing.assert_allclose(got['l1/kernel'], np.linalg.norm(x, axis=0), rtol=1e-5)
  np.testing.assert_allclose(got['l2/kernel'],
                             np.linalg.norm(np.maximum(x @ w1 + b1, 0), axis=0), rtol=1e-5)
  same = peft_select.input_norms(types.SimpleNamespace(task=task(linen)), params, {},
                                 ['l1/kernel', 'l2/kernel'], 2)
  for k in got:
    np.testing.assert_allclose(got[k], same[k], rtol=1e-6)


class NNXEinsumNet(nnx.Module):
  def __init__(self, rngs):
    self.mix = nnx.Einsum('bi,ij->bj', (8, 8), rngs=rngs)
    self.l2 = nnx.Linear(8, 4, rngs=rngs)

  def __call__(self, x):
    return self.l2(self.mix(x))


class LinenOwnKernel(nn.Module):
  @nn.compact
  def __call__(self, x):
    w = self.param('kernel', nn.initializers.lecun_normal(), (8, 8))
    return x @ w


class LinenOwnNet(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(4, name='l2')(LinenOwnKernel(name='mix')(x))


def test_activation_score_refuses_a_target_no_dense_layer_multiplies():
  """An Einsum's (NNX) or a module's own (Linen) kernel has no intercepted
  inputs: refused by name, where it used to score zeros (rows by index)."""
  nnx_m = nnx_model(NNXEinsumNet(nnx.Rngs(0)))
  linen_m = LinenOwnNet()
  for m, params in ((nnx_m, nnx_m.init(None, None)['params']),
                    (linen_m, linen_m.init(jax.random.key(0), jnp.ones((1, 8)))['params'])):
    run = types.SimpleNamespace(task=task(m))
    with pytest.raises(SetupError, match=r"row_score 'activation'.*'mix/kernel'.*nnx.Linear"):
      peft_select.input_norms(run, params, {}, ['mix/kernel', 'l2/kernel'], 1)
    assert set(peft_select.input_norms(run, params, {}, ['l2/kernel'], 1)) == {'l2/kernel'}


# --- distillation -------------------------------------------------------------------------

def test_kd_distillation_of_an_nnx_model_matches_linen(tmp_path):
  """Prune then fine-tune with the KL term, the teacher being the dense
  weights: the NNX run's losses and weights are the Linen run's."""
  linen, model, params = pair()
  d = distill_lib.Distill(kd_weight=1.0, temperature=2.0)
  out = {}
  for name, m in (('linen', linen), ('nnx', model)):
    t = task(m, distill=d, schedule=sj.make_schedule('oneshot', sparsity=0.5)).with_loop(
        steps=6, eval_every=6, checkpoint_every=6, log_every=1)
    row = finetune.prune_then_finetune(t, params, tmp_path / name)
    assert row['density'] == pytest.approx(0.5, abs=0.01)
    rows = metrics_lib.read_rows(tmp_path / name / 'metrics.jsonl')
    kd = [r['kd_loss'] for r in rows if 'kd_loss' in r]
    assert len(kd) == 6 and kd[0] > 0     # the pruned student differs from the teacher
    out[name] = (kd, results.final_weights(tmp_path / name)[0])
  np.testing.assert_allclose(out['nnx'][0], out['linen'][0], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(out['nnx'][1]), jax.tree.leaves(out['linen'][1])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_hidden_state_distillation_of_an_nnx_model_is_refused_before_training(tmp_path):
  _, model, params = pair()
  for d in (distill_lib.Distill(kd_weight=0.0, hidden_weight=1.0),
            distill_lib.Distill(kd_weight=1.0, hidden_weight=0.5, hidden_modules='l1')):
    t = task(model, distill=d)
    with pytest.raises(SetupError, match=r'distill\.hidden_weight: .*Linen.*hidden_weight to 0'):
      loop.train(t, tmp_path / 'run', start=loop.Start(params, None), progress=False)
    assert not (tmp_path / 'run' / 'metrics.jsonl').exists()


# --- post-training pruning ----------------------------------------------------------------

class LinenBlock(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = nn.LayerNorm(name='norm')(x)
    q, k = nn.Dense(16, name='query')(h), nn.Dense(16, name='key')(h)
    return x + nn.Dense(16, name='fc_out')(nn.gelu(nn.Dense(32, name='fc_in')(q * k)))


class LinenBlocks(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.Dense(16, name='embed')(x)
    for i in range(2):
      x = LinenBlock(name=f'block_{i}')(x)
    return nn.Dense(4, name='output')(x)


class NNXBlock(nnx.Module):
  def __init__(self, rngs, einsum=False):
    self.norm = nnx.LayerNorm(16, rngs=rngs)
    self.query = nnx.Linear(16, 16, rngs=rngs)
    self.key = nnx.Linear(16, 16, rngs=rngs)
    self.fc_in = nnx.Linear(16, 32, rngs=rngs)
    self.fc_out = nnx.Linear(32, 16, rngs=rngs)
    self.mix = nnx.Einsum('...i,ij->...j', (16, 16), rngs=rngs) if einsum else None

  def __call__(self, x):
    h = self.norm(x)
    x = x + self.fc_out(nnx.gelu(self.fc_in(self.query(h) * self.key(h))))
    return self.mix(x) if self.mix is not None else x


class NNXBlocks(nnx.Module):
  def __init__(self, rngs, einsum=False):
    self.embed = nnx.Linear(8, 16, rngs=rngs)
    self.block_0 = NNXBlock(rngs, einsum)
    self.block_1 = NNXBlock(rngs)
    self.output = nnx.Linear(16, 4, rngs=rngs)

  def __call__(self, x):
    return self.output(self.block_1(self.block_0(self.embed(x))))


KERNELS = [f'block_{b}/{p}/kernel' for b in range(2) for p in ('query', 'key', 'fc_in',
                                                               'fc_out')]


@pytest.mark.parametrize('method,target', [('wanda', {'sparsity': 0.5}),
                                           ('sparsegpt', {'nm': '2:4'})])
def test_posttrain_of_nnx_linear_layers_equals_linen(method, target):
  """The NNX model's nnx.Linear layers get the inputs the Linen model's
  Dense layers get (the same groups, block by block, each from the pruned
  layers before it): the same masks and weights, bitwise. (Before: refused.)"""
  model = nnx_model(NNXBlocks(nnx.Rngs(0)))
  params = jax.device_get(model.init(None, None)['params'])
  batches = [jax.random.normal(jax.random.key(i), (4, 8, 8)) for i in range(3)]
  x = batches[0]
  before = np.asarray(model.apply({'params': params}, x))
  want, want_masks, want_report = prune_model(LinenBlocks(), params, batches, method, **target)
  got, masks, report = prune_model(model, params, batches, method, **target)
  assert [r['path'] for r in report['layers']] == KERNELS
  assert [r['path'] for r in want_report['layers']] == KERNELS
  assert report['left_dense'] == want_report['left_dense'] == ['embed/kernel', 'output/kernel']
  assert report['calibration_tokens'] == want_report['calibration_tokens'] == 96
  flat = dict(tree_lib.leaves_with_paths(masks))
  for path, m in tree_lib.leaves_with_paths(want_masks):
    np.testing.assert_array_equal(flat[path], m, err_msg=path)
  for path in KERNELS:
    np.testing.assert_array_equal((~flat[path]).sum(0), flat[path].shape[0] // 2)
  flat = dict(tree_lib.leaves_with_paths(got))
  for path, w in tree_lib.leaves_with_paths(want):
    np.testing.assert_array_equal(flat[path], w, err_msg=path)
  # The grouping by shared input is the same: query and key, then fc_in, fc_out.
  for m in (LinenBlocks(), model):
    found, first, _ = blocks_lib.find_blocks(m, jax.tree.map(np.asarray, params), None,
                                             batches, {'train': False}, calibrate.BLOCKS)
    groups, _ = calibrate.dense_groups(found[0][1], *first[0])
    assert groups == [[('query',), ('key',)], [('fc_in',)], [('fc_out',)]]
  # The user's model and params are untouched.
  np.testing.assert_array_equal(model.apply({'params': params}, x), before)


def test_a_prunable_weight_no_dense_layer_multiplies_is_refused():
  """A kernel inside a block that the rule accepts but no Dense layer
  multiplies (an Einsum) used to be left dense in silence (Linen) while the
  report gave the target sparsity; now it is an error naming it, before any
  work, and excluding it by the rule prunes the rest."""
  batches = [jax.random.normal(jax.random.key(i), (4, 8, 8)) for i in range(2)]

  class LinenEinsumBlock(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Einsum((16, 16), '...i,ij->...j', name='mix')(LinenBlock(name='inner')(x))

  class LinenEinsumNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      x = LinenEinsumBlock(name='block_0')(nn.Dense(16, name='embed')(x))
      return nn.Dense(4, name='output')(x)

  nnx_m = nnx_model(NNXBlocks(nnx.Rngs(0), einsum=True))
  linen_m = LinenEinsumNet()
  for m, params in ((nnx_m, nnx_m.init(None, None)['params']),
                    (linen_m, linen_m.init(jax.random.key(0), batches[0])['params'])):
    with pytest.raises(ValueError, match=r"'block_0/mix/kernel' \(16, 16\) is prunable.*"
                                         r"not the kernel of a Dense layer.*pruning.exclude"):
      prune_model(m, params, batches, 'wanda', sparsity=0.5)
    _, masks, report = prune_model(m, params, batches, 'wanda', sparsity=0.5,
                                   rule=tree_lib.PrunableRule(exclude='mix'))
    assert 'block_0/mix/kernel' not in [r['path'] for r in report['layers']]
    assert len(report['layers']) == 4 * len(report['blocks'])
