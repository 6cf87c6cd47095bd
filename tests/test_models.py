"""The model zoo: shapes, parameter counts, layer names, the residual and
causal structure, dropout, BatchNorm state, registry errors, and a few real
Adam steps per model. Compiling dominates the run time on CPU (a random
initialiser of a 4-D kernel takes about a second), so the models run small
and narrow on 8x8 images, each is initialised once per file, and full-size
parameter counts use jax.eval_shape."""

import functools
import re

import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.core import tree as tree_lib
from sparsejax.models import MODELS, get_model, init_variables, model_settings

# name -> (small settings, input shape without batch, input dtype)
SMALL = {
    'mlp': ({}, (28, 28, 1), jnp.float32),
    'lenet300_100': ({}, (784,), jnp.float32),
    'mnist1d_mlp': ({}, (40,), jnp.float32),
    'conv2': ({'width': 1 / 16}, (8, 8, 3), jnp.float32),
    'conv4': ({'width': 1 / 16}, (8, 8, 3), jnp.float32),
    'conv6': ({'width': 1 / 16}, (8, 8, 3), jnp.float32),
    'resnet20': ({'width': 4}, (8, 8, 3), jnp.float32),
    'transformer_encoder': (
        {'d_model': 16, 'num_heads': 2, 'num_layers': 1, 'mlp_dim': 32,
         'max_len': 16}, (12,), jnp.float32),
    'transformer_decoder': (
        {'vocab_size': 32, 'd_model': 16, 'num_heads': 2, 'num_layers': 1,
         'mlp_dim': 32, 'max_len': 16}, (12,), jnp.int32),
    'bert': (
        {'vocab_size': 32, 'hidden': 16, 'num_layers': 1, 'num_heads': 2,
         'intermediate': 32, 'max_len': 16, 'num_classes': 10}, (12,), jnp.int32),
    'llama': (
        {'vocab_size': 32, 'hidden': 16, 'num_heads': 2, 'num_kv_heads': 1, 'num_layers': 1,
         'intermediate': 32, 'tie_embeddings': False}, (12,), jnp.int32),
}
BATCH = 4


_CACHE = {}


def _small(name, **overrides):
  """The small model and its variables (key 0), initialised once per file.
  Overrides must change no parameter shape (e.g. dropout): they reuse the
  base model's variables."""
  settings, shape, dtype = SMALL[name]
  base_key = (name, ())
  if base_key not in _CACHE:
    model = get_model(name, **settings)
    _CACHE[base_key] = (model, init_variables(model, jax.random.key(0), shape, dtype))
  cache_key = (name, tuple(sorted(overrides.items())))
  if cache_key not in _CACHE:
    model = get_model(name, **{**settings, **overrides})
    _CACHE[cache_key] = (model, _CACHE[base_key][1])
  model, variables = _CACHE[cache_key]
  return model, variables, shape, dtype


_APPLY = {}


def _apply(model, variables, x, **kwargs):
  """model.apply under one jit per model (kwargs other than rngs are static)."""
  rngs = kwargs.pop('rngs', None)
  key = (model, tuple(sorted(kwargs.items())))
  if key not in _APPLY:
    _APPLY[key] = jax.jit(lambda v, x, rngs: model.apply(v, x, rngs=rngs, **kwargs))
  return _APPLY[key](variables, x, rngs)


def _inputs(shape, dtype, seed=1, batch=BATCH, vocab=32):
  """A fixed random batch, drawn with numpy (a jax.random draw per new shape
  costs a compile)."""
  rng = np.random.default_rng(seed)
  if jnp.issubdtype(dtype, jnp.integer):
    return jnp.asarray(rng.integers(0, vocab, (batch, *shape)), dtype=dtype)
  return jnp.asarray(rng.standard_normal((batch, *shape)), dtype=dtype)


def _num_params(variables):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(variables['params']))


def _abstract_init(name, shape, dtype=jnp.float32, **settings):
  init = functools.partial(init_variables, get_model(name, **settings),
                           input_shape=shape, input_dtype=dtype)
  return jax.eval_shape(init, jax.random.key(0))


def test_registry_is_complete():
  assert sorted(MODELS) == sorted(SMALL)


@pytest.mark.parametrize('name', sorted(MODELS))
def test_init_and_output_shape(name):
  model, variables, shape, dtype = _small(name)
  logits = _apply(model, variables, _inputs(shape, dtype))
  if name in ('transformer_decoder', 'llama'):
    chex.assert_shape(logits, (BATCH, shape[0], 32))
  else:
    chex.assert_shape(logits, (BATCH, 10))
  chex.assert_tree_all_finite(logits)
  for leaf in jax.tree.leaves(variables):
    assert jnp.issubdtype(leaf.dtype, jnp.floating)
  expected = {'params', 'batch_stats'} if name == 'resnet20' else {'params'}
  assert set(variables) == expected
  # Deterministic given the key; a different key gives different weights.
  again = init_variables(model, jax.random.key(0), shape, dtype)
  chex.assert_trees_all_equal(variables, again)
  other = init_variables(model, jax.random.key(1), shape, dtype)
  assert not np.array_equal(variables['params']['output']['kernel'],
                            other['params']['output']['kernel'])


@pytest.mark.parametrize('name', sorted(MODELS))
def test_output_layer_is_named_output(name):
  # The pattern 'output' selects exactly the last layer (the attention's
  # projection is 'out', which it does not match).
  _, variables, _, _ = _small(name)
  paths = dict(tree_lib.leaves_with_paths(variables['params']))
  assert paths['output/kernel'].ndim == 2
  heads = ['output/kernel'] if name == 'llama' else ['output/bias', 'output/kernel']
  assert sorted(p for p in paths if re.search('output', p)) == heads   # Llama's head has no bias


def test_lenet_initializer_option():
  """Gaussian Glorot by default (Frankle & Carbin); uniform Glorot, bounded by
  sqrt(6 / (fan_in + fan_out)), for the RigL script's TensorFlow default."""
  def kernel(**settings):
    v = init_variables(get_model('lenet300_100', **settings), jax.random.key(0),
                       input_shape=(784,), input_dtype=jnp.float32)
    return np.asarray(v['params']['hidden_0']['kernel'])
  bound = np.sqrt(6 / (784 + 300))
  uniform, normal = kernel(initializer='glorot_uniform'), kernel()
  assert np.abs(uniform).max() <= bound < np.abs(normal).max()
  np.testing.assert_allclose(uniform.std(), np.sqrt(2 / (784 + 300)), rtol=0.02)
  np.testing.assert_allclose(normal.std(), np.sqrt(2 / (784 + 300)), rtol=0.05)
  with pytest.raises(ValueError, match='LeNet300100.initializer'):
    get_model('lenet300_100', initializer='he')


def test_parameter_counts():
  # LeNet-300-100: 784*300+300 + 300*100+100 + 100*10+10.
  assert _num_params(_abstract_init('lenet300_100', (784,))) == 266_610
  assert _num_params(_abstract_init('mlp', (28, 28, 1))) == 266_610
  # MNIST-1D MLP: 40*500+500 + 500*500+500 + 500*10+10 = 20500+250500+5010.
  assert _num_params(_abstract_init('mnist1d_mlp', (40,))) == 276_010
  # ResNet-20 with option-B shortcuts (convs have no bias; BN has scale+bias):
  #   stem 3*3*3*16 + 2*16                                   =     464
  #   stage 1: 3 blocks * (2*(3*3*16*16) + 2*2*16)            =  14,016
  #   stage 2: 3*3*16*32+64 + 3*3*32*32+64 + 1*1*16*32+64
  #            + 2 blocks * (2*(3*3*32*32) + 2*2*32)          =  51,648
  #   stage 3: 3*3*32*64+128 + 3*3*64*64+128 + 1*1*32*64+128
  #            + 2 blocks * (2*(3*3*64*64) + 2*2*64)          = 205,696
  #   output 64*10+10                                         =     650
  # total 272,474 (He et al.: 0.27M).
  resnet = _abstract_init('resnet20', (32, 32, 3))
  assert _num_params(resnet) == 272_474
  # Conv-2/4/6 on 32x32x3 (Frankle & Carbin: 4.3M, 2.4M, 1.7M): convs
  # 1792+36928 (+73856+147584 (+295168+590080)), then flatten 16*16*64,
  # 8*8*128 or 4*4*256 -> 256, 256*256+256, 256*10+10.
  conv_tail = 65_792 + 2_570
  assert _num_params(_abstract_init('conv2', (32, 32, 3))) == (
      1_792 + 36_928 + 16384 * 256 + 256 + conv_tail) == 4_301_642
  assert _num_params(_abstract_init('conv4', (32, 32, 3))) == (
      1_792 + 36_928 + 73_856 + 147_584 + 8192 * 256 + 256 + conv_tail) == 2_425_930
  assert _num_params(_abstract_init('conv6', (32, 32, 3))) == (
      1_792 + 36_928 + 73_856 + 147_584 + 295_168 + 590_080 + 4096 * 256 + 256
      + conv_tail) == 2_262_602


def test_resnet_structure():
  variables = _abstract_init('resnet20', (32, 32, 3))
  params = variables['params']
  blocks = sorted(k for k in params if k.startswith('stage_'))
  assert len(blocks) == 9
  with_projection = sorted(b for b in blocks if 'shortcut' in params[b])
  assert with_projection == ['stage_1_block_0', 'stage_2_block_0']
  assert params['stage_2_block_2']['conv_1']['kernel'].shape == (3, 3, 64, 64)
  assert set(variables['batch_stats']['norm_0']) == {'mean', 'var'}


def test_transformer_parameter_names():
  params = _abstract_init('transformer_encoder', (12, 3))['params']  # defaults
  assert sorted(params) == ['block_0', 'block_1', 'embed', 'norm', 'output',
                            'pos_embed']
  for sub in ('query', 'key', 'value', 'out'):
    assert params['block_1']['attention'][sub]['kernel'].shape == (64, 64)
  assert params['block_0']['mlp']['fc_in']['kernel'].shape == (64, 128)
  assert params['block_0']['mlp']['fc_out']['kernel'].shape == (128, 64)
  assert set(params['block_0']['norm_0']) == {'scale', 'bias'}
  assert set(params['block_0']['norm_1']) == {'scale', 'bias'}
  assert params['embed']['kernel'].shape == (3, 64)
  assert params['pos_embed']['embedding'].shape == (512, 64)
  assert params['output']['kernel'].shape == (64, 10)
  params = _abstract_init('transformer_decoder', (12,), jnp.int32)['params']
  assert params['embed']['embedding'].shape == (256, 64)
  assert params['output']['kernel'].shape == (64, 256)
  assert 'attention' in params['block_1']


def test_encoder_inputs():
  settings, _, _ = SMALL['transformer_encoder']
  features = get_model('transformer_encoder', **settings)
  # Batches of one reuse the operations compiled by the (eager) init.
  v = init_variables(features, jax.random.key(0), (12, 3))
  chex.assert_shape(features.apply(v, _inputs((12, 3), jnp.float32, batch=1)), (1, 10))
  tokens = get_model('transformer_encoder', **settings, vocab_size=50)
  v = init_variables(tokens, jax.random.key(0), (12,), jnp.int32)
  assert v['params']['embed']['embedding'].shape == (50, 16)
  x = _inputs((12,), jnp.int32, batch=1, vocab=50)
  chex.assert_shape(tokens.apply(v, x), (1, 10))
  with pytest.raises(ValueError, match='max_len'):
    init_variables(features, jax.random.key(0), (17, 3))


def test_mlp_flattens_and_conv_adds_channel():
  model, variables, _, _ = _small('mlp')
  x = _inputs((28, 28, 1), jnp.float32)
  np.testing.assert_allclose(_apply(model, variables, x),
                             _apply(model, variables, x.reshape(BATCH, 784)),
                             rtol=1e-6)
  model, variables, _, _ = _small('conv2')
  first = variables['params']['conv_0']
  grey = {'params': {**variables['params'],
                     'conv_0': {**first, 'kernel': first['kernel'][:, :, :1, :]}}}
  x = _inputs((8, 8), jnp.float32)
  np.testing.assert_allclose(_apply(model, grey, x),
                             _apply(model, grey, x[..., None]), rtol=1e-6)


def test_mnist1d_residual_passes_hidden_through():
  model, variables, _, _ = _small('mnist1d_mlp')
  p = variables['params']
  assert p['hidden_1']['kernel'].shape == (500, 500)
  p = {**p, 'hidden_1': jax.tree.map(jnp.zeros_like, p['hidden_1'])}
  x = _inputs((40,), jnp.float32)
  h = jax.nn.relu(x @ p['hidden_0']['kernel'] + p['hidden_0']['bias'][None, :])
  expected = h @ p['output']['kernel'] + p['output']['bias'][None, :]
  np.testing.assert_allclose(_apply(model, {'params': p}, x), expected,
                             rtol=1e-5, atol=1e-5)


def _mnist1d(key=0, **settings):
  """A narrow MNIST-1D MLP (hidden 64) and its params."""
  model = get_model('mnist1d_mlp', hidden=64, **settings)
  return model, init_variables(model, jax.random.key(key), (40,))['params']


def test_mnist1d_defaults_unchanged():
  # The defaults are the notebook's model, bit for bit: the same params as
  # the explicit default settings and as the body the model had before the
  # settings existed (residual dense_stack, PyTorch kernels and biases).
  from sparsejax.models import mlp as mlp_lib

  class Before(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
      return mlp_lib.dense_stack(x, (64, 64), 10, residual=True,
                                 kernel_init=mlp_lib._TORCH_KERNEL_INIT, torch_bias=True)

  _, params = _mnist1d()
  _, explicit = _mnist1d(residual=True, initializer='torch', bias='separate')
  before = init_variables(Before(), jax.random.key(0), (40,))['params']
  chex.assert_trees_all_equal(params, explicit)
  chex.assert_trees_all_equal(params, before)


def test_mnist1d_residual_false_is_a_plain_mlp():
  residual, p = _mnist1d()
  plain, _ = _mnist1d(residual=False)
  x = _inputs((40,), jnp.float32)
  h = jax.nn.relu(x @ p['hidden_0']['kernel'] + p['hidden_0']['bias'][None, :])
  h = jax.nn.relu(h @ p['hidden_1']['kernel'] + p['hidden_1']['bias'][None, :])
  expected = h @ p['output']['kernel'] + p['output']['bias'][None, :]
  out = plain.apply({'params': p}, x)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
  assert not np.allclose(out, residual.apply({'params': p}, x), atol=1e-3)


@pytest.mark.parametrize('initializer', ['torch', 'lecun'])
def test_mnist1d_initializers(initializer):
  _, p = _mnist1d(initializer=initializer)
  for name, fan_in in (('hidden_0', 40), ('hidden_1', 64), ('output', 64)):
    kernel, bias = np.asarray(p[name]['kernel']), np.asarray(p[name]['bias'])
    bound = 1 / np.sqrt(fan_in)
    if initializer == 'torch':   # U(-bound, bound), kernels and biases alike
      assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
      assert np.abs(bias).max() > 0.5 * bound
      if kernel.size >= 4096:
        np.testing.assert_allclose(kernel.std(), bound / np.sqrt(3), rtol=0.05)
    else:                        # LeCun normal (std 1/sqrt(fan_in)), zero biases
      np.testing.assert_array_equal(bias, 0)
      assert np.abs(kernel).max() > bound
      if kernel.size >= 4096:
        np.testing.assert_allclose(kernel.std(), bound, rtol=0.1)


def test_mnist1d_bias_placement():
  _, separate = _mnist1d()
  row_model, row = _mnist1d(bias='kernel_row')
  none_model, none = _mnist1d(bias='none')
  paths = lambda params: sorted(p for p, _ in tree_lib.leaves_with_paths(params))
  assert paths(row) == paths(none) == ['hidden_0/kernel', 'hidden_1/kernel', 'output/kernel']
  assert row['hidden_0']['kernel'].shape == (41, 64)
  assert row['output']['kernel'].shape == (65, 10)
  assert none['hidden_0']['kernel'].shape == (40, 64)
  # The bias row is part of the prunable kernel, so a mask covers it.
  assert tree_lib.prunable_paths(row) == paths(row)
  assert _num_params({'params': row}) == _num_params({'params': separate})
  assert _num_params(_abstract_init('mnist1d_mlp', (40,), bias='kernel_row')) == 276_010
  assert _num_params(_abstract_init('mnist1d_mlp', (40,), bias='none')) == 275_000
  # The last row acts as the bias: the model with the separate leaves moved
  # into it computes the same function.
  moved = {k: {'kernel': jnp.concatenate([v['kernel'], v['bias'][None]], axis=0)}
           for k, v in separate.items()}
  x = _inputs((40,), jnp.float32)
  default_model, _ = _mnist1d()
  np.testing.assert_allclose(row_model.apply({'params': moved}, x),
                             default_model.apply({'params': separate}, x),
                             rtol=1e-5, atol=1e-5)
  bias_row = np.asarray(row['hidden_0']['kernel'][-1])   # PyTorch's bias init
  assert np.abs(bias_row).max() <= 1 / np.sqrt(40) and np.abs(bias_row).max() > 0
  chex.assert_shape(none_model.apply({'params': none}, x), (BATCH, 10))


def test_mnist1d_bad_settings():
  with pytest.raises(ValueError, match=r"MNIST1DMLP.initializer must be one of "
                                       r"\['torch', 'lecun'\], got 'xavier'"):
    get_model('mnist1d_mlp', initializer='xavier')
  with pytest.raises(ValueError, match=r"MNIST1DMLP.bias must be one of "
                                       r"\['separate', 'kernel_row', 'none'\], got 'yes'"):
    get_model('mnist1d_mlp', bias='yes')
  with pytest.raises(ValueError, match=r'MNIST1DMLP.residual must be one of \[True, False\]'):
    get_model('mnist1d_mlp', residual='no')


def test_residual_mlp_needs_equal_widths():
  with pytest.raises(ValueError, match='equal hidden widths'):
    init_variables(get_model('mlp', features=(8, 4), residual=True),
                   jax.random.key(0), (5,))


def test_decoder_is_causal():
  model, variables, shape, dtype = _small('transformer_decoder')
  tokens = _inputs(shape, dtype)
  base = _apply(model, variables, tokens)
  for t in (0, 5, 11):
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % 32)
    logits = _apply(model, variables, changed)
    np.testing.assert_array_equal(logits[:, :t], base[:, :t])
    assert not np.allclose(logits[:, t], base[:, t])


@pytest.mark.parametrize('name', ['mlp', 'conv2', 'transformer_encoder'])
def test_dropout(name):  # the decoder shares the encoder's Block
  # Eager calls on a batch of one reuse the operations compiled by the init.
  base, variables, shape, dtype = _small(name)  # dropout=0.0
  x = _inputs(shape, dtype, batch=1)
  eval_out = base.apply(variables, x, train=False)
  np.testing.assert_array_equal(base.apply(variables, x, train=True), eval_out)
  # With dropout on (same parameters), training differs from evaluation.
  model = get_model(name, **SMALL[name][0], dropout=0.5)
  np.testing.assert_array_equal(model.apply(variables, x, train=False), eval_out)
  train_out = model.apply(variables, x, train=True, rngs={'dropout': jax.random.key(3)})
  chex.assert_tree_all_finite(train_out)
  assert not np.allclose(eval_out, train_out)


def test_resnet_batch_stats():
  model, variables, shape, dtype = _small('resnet20')
  x = _inputs(shape, dtype) * 3.0 + 1.0
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=['batch_stats']))
  logits, updates = train(variables, x)
  chex.assert_shape(logits, (BATCH, 10))
  before = variables['batch_stats']['norm_0']['mean']
  after = updates['batch_stats']['norm_0']['mean']
  assert not np.allclose(before, after)
  chex.assert_trees_all_equal_structs(variables['batch_stats'], updates['batch_stats'])
  with pytest.raises(flax.errors.ModifyScopeVariableError):  # not declared mutable
    model.apply(variables, x, train=True)


def test_get_model_errors():
  with pytest.raises(ValueError, match=r"unknown model 'resnet21'.*resnet20"):
    get_model('resnet21')
  with pytest.raises(ValueError, match=r"model 'mlp' has no setting 'widht'.*features"):
    get_model('mlp', widht=3)
  assert model_settings('resnet20') == ['num_classes', 'width', 'blocks_per_stage']
  assert isinstance(get_model('conv4', width=0.5), nn.Module)


def test_init_variables_under_jit():
  model = get_model('mlp', features=(6,), num_classes=3)
  init = functools.partial(init_variables, model, input_shape=(5,))
  jax.jit(init).lower(jax.random.key(4))  # traces and lowers (compiling is slow here)
  shapes = jax.eval_shape(init, jax.random.key(4))
  assert shapes['params']['hidden_0']['kernel'].shape == (5, 6)


@pytest.mark.parametrize('name', ['mlp', 'lenet300_100', 'mnist1d_mlp',
                                  'transformer_encoder', 'transformer_decoder'])
def test_adam_memorises_a_batch(name):
  model, variables, shape, dtype = _small(name)
  x = _inputs(shape, dtype, seed=5, batch=16)
  if name == 'transformer_decoder':
    targets = jnp.roll(x, -1, axis=1)
  else:
    targets = jnp.asarray(np.random.default_rng(6).integers(0, 10, (16,)))
  tx = optax.adam(1e-2)

  def loss_fn(params):
    logits = model.apply({'params': params}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  params = variables['params']
  opt_state = tx.init(params)
  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  final = float(loss_fn(params))
  assert losses[1] < losses[0]
  assert final < 0.5 * losses[0], (losses[0], final)


@pytest.mark.extended   # 24 s; test_llama's remat test checks the same per-block remat in 7
def test_transformer_remat_same_params_and_gradients():
  """remat=True (gradient checkpointing per block) keeps the param tree and
  gives the same gradients, dropout included; the backward pass recomputes."""
  from sparsejax.models.transformer import TransformerDecoder
  kw = dict(vocab_size=50, max_len=16, d_model=32, num_heads=4, num_layers=2, mlp_dim=64,
            dropout=0.1)
  plain, remat = TransformerDecoder(**kw), TransformerDecoder(**kw, remat=True)
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, (3, 16)))
  variables = plain.init({'params': jax.random.key(0)}, tokens)
  assert jax.tree.structure(remat.init({'params': jax.random.key(0)}, tokens)) == \
      jax.tree.structure(variables)

  def grad(model):
    loss = lambda v: jnp.mean(model.apply(v, tokens, train=True,
                                          rngs={'dropout': jax.random.key(1)}) ** 2)
    return jax.jit(jax.grad(loss))(variables), jax.make_jaxpr(jax.grad(loss))(variables)
  (g_plain, _), (g_remat, jaxpr) = grad(plain), grad(remat)
  for x, y in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat)):
    np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
  assert 'remat' in str(jaxpr)
