"""Row and LoRA deltas as extra terms of the forward pass (peft_forward):
the same losses and gradients as merging them into the weights, on a tiny
MLP and a tiny Llama (remat and bf16 included); no (d_in, d_out) array in
the row method's backward pass, and less temporary memory for the compiled
step; and the cases that stay merged (a kernel no plain nn.Dense multiplies,
Conv kernels, unstructured, full, NNX-wrapped models)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsejax.core import tree as tree_lib
from sparsejax.models.llama import LlamaConfig
from sparsejax.models.mlp import MLP, BiasRowDense
from sparsejax.programs import peft_forward, peft_methods as pm

LLAMA = LlamaConfig(vocab_size=64, hidden=32, num_layers=1, num_heads=4, num_kv_heads=2,
                    intermediate=48, max_len=64)
LLAMA_TARGETS = r'block_\d+/(attention/(query|key|value|out)|mlp/(gate|up|down))/kernel'


def _method(kind, params, pattern, head=(), rows=3, rank=2):
  targets = tuple(pm.target_paths(params, pattern))
  flat = dict(tree_lib.leaves_with_paths(params))
  rng = np.random.default_rng(0)
  chosen = tuple(tuple(sorted(rng.choice(flat[p].shape[-1], rows, replace=False).tolist()))
                 for p in targets)
  return pm.Method(kind, targets, tuple(head), rows=chosen if kind == 'row' else (),
                   rank=rank, scale=1.5)


def _random_trainable(method, params, seed):
  """The method's trainable tree with every leaf random (nonzero deltas and B;
  drawn in numpy: no small compiled programs per leaf shape)."""
  shapes = jax.eval_shape(method.init_trainable, params, jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.05 * rng.standard_normal(s.shape)).astype(s.dtype), shapes)


@functools.lru_cache(maxsize=None)
def _loss_and_grad(model, method, forward):
  """A jitted (trainable, frozen, x, y) -> (loss, grads) through Reparametrized."""
  rep = pm.Reparametrized(model, method, forward=forward)

  def loss(trainable, frozen, x, y):
    logits = rep.apply({'params': trainable, 'frozen': frozen}, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return jax.jit(jax.value_and_grad(loss)), loss, rep


def _assert_same(model, method, params, x, y, seeds=(0, 1, 2), rtol=1e-5):
  merged, forward = (_loss_and_grad(model, method, f)[0] for f in (False, True))
  for seed in seeds:
    trainable = _random_trainable(method, params, seed)
    (l0, g0), (l1, g1) = merged(trainable, params, x, y), forward(trainable, params, x, y)
    np.testing.assert_allclose(l1, l0, rtol=rtol)
    for (path, a), (_, b) in zip(tree_lib.leaves_with_paths(g0),
                                 tree_lib.leaves_with_paths(g1)):
      a, b = np.asarray(a), np.asarray(b)
      assert np.any(a != 0), path
      np.testing.assert_allclose(b, a, rtol=rtol, atol=rtol * np.max(np.abs(a)), err_msg=path)


def _eqns(jaxpr):
  """Every equation of a jaxpr and of the jaxprs inside it (remat, pjit, ...)."""
  for e in jaxpr.eqns:
    yield e
    for v in e.params.values():
      for j in v if isinstance(v, (list, tuple)) else (v,):
        inner = getattr(j, 'jaxpr', j)
        if hasattr(inner, 'eqns'):
          yield from _eqns(inner)


# --- equivalence with merging -------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _mlp():
  model = MLP(features=(16, 24), num_classes=5)
  x = jax.random.normal(jax.random.key(0), (8, 12))
  y = jnp.arange(8) % 5
  return model, model.init(jax.random.key(1), x)['params'], x, y


@pytest.mark.parametrize('kind', ['row', 'lora'])
def test_mlp_forward_terms_equal_merging(kind):
  model, params, x, y = _mlp()
  method = _method(kind, params, r'hidden_\d/kernel', head=('output/kernel', 'output/bias'))
  assert peft_forward.forward_targets(model, method, params) == set(method.targets)
  _assert_same(model, method, params, x, y)


@functools.lru_cache(maxsize=None)
def _llama(remat, dtype=jnp.float32):
  """A one-block Llama (GQA, SwiGLU, tied embeddings) with random params
  drawn in numpy (no compiled init)."""
  model = LLAMA.module(remat=remat, dtype=dtype)
  x = jax.random.randint(jax.random.key(0), (2, 7), 0, LLAMA.vocab_size)
  rng = np.random.default_rng(1)
  params = jax.tree.map(lambda s: (1 + 0.1 * rng.standard_normal(s.shape) if len(s.shape) == 1
                                   else 0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
                        jax.eval_shape(model.init, jax.random.key(1), x)['params'])
  y = jax.random.randint(jax.random.key(2), (2, 7), 0, LLAMA.vocab_size)
  return model, params, x, y


@pytest.mark.parametrize('kind,remat', [('row', False), ('row', True), ('lora', False),
                                        ('lora', True)])
def test_llama_forward_terms_equal_merging(kind, remat):
  model, params, x, y = _llama(remat)
  method = _method(kind, params, LLAMA_TARGETS)
  assert len(method.targets) == 7     # query key value out gate up down
  _assert_same(model, method, params, x, y, seeds=(0, 1))
  assert not _loss_and_grad(model, method, True)[2]._merged_anyway   # all forward terms


def test_bfloat16_compute_stays_bfloat16():
  """A bf16-compute Llama (float32 params, remat): the row term is cast as
  nn.Dense casts its kernel, so every matrix product in the forward pass
  multiplies bf16 arrays; the loss is the merged one's to bf16 rounding."""
  model, params, x, y = _llama(True, jnp.bfloat16)
  method = _method('row', params, LLAMA_TARGETS)
  trainable = _random_trainable(method, params, 0)
  loss = jax.jit(_loss_and_grad(model, method, True)[1])
  jaxpr = jax.make_jaxpr(loss)(trainable, params, x, y).jaxpr
  dots = [e for e in _eqns(jaxpr) if e.primitive.name == 'dot_general']
  assert len(dots) >= 7 * 2 and all(v.aval.dtype == jnp.bfloat16
                                     for e in dots for v in e.invars)
  merged = jax.jit(_loss_and_grad(model, method, False)[1])(trainable, params, x, y)
  np.testing.assert_allclose(loss(trainable, params, x, y), merged, rtol=2e-2)


# --- memory: no (d_in, d_out) gradient ----------------------------------------------------

@pytest.mark.parametrize('kind', ['row', 'lora'])
def test_backward_pass_forms_no_full_kernel_gradient(kind):
  """MLP 512-2048-2048-10, batch 64, the two wide hidden kernels adapted: the
  merged path differentiates through the merged kernel (a dot_general of a
  target's full shape, either orientation, in the gradient's jaxpr); with
  forward terms no equation of the gradient's jaxpr (forward or backward)
  makes an array of a target's shape, and the compiled training step
  (gradient and Adam update) needs less temporary memory."""
  model = MLP(features=(512, 2048, 2048), num_classes=10)
  x, y = jnp.zeros((64, 784)), jnp.zeros((64,), jnp.int32)
  params = jax.eval_shape(model.init, jax.random.key(0), x)['params']
  method = _method(kind, params, r'hidden_[12]/kernel', head=('output/kernel', 'output/bias'),
                   rows=8, rank=8)
  trainable = jax.eval_shape(method.init_trainable, params, jax.random.key(0))
  full = {tuple(s) for p, w in tree_lib.leaves_with_paths(params) if p in method.targets
          for s in (w.shape, w.shape[::-1])}
  opt = optax.adam(1e-3)
  temp, found = {}, {}
  for forward in (False, True):
    loss = _loss_and_grad(model, method, forward)[1]
    jaxpr = jax.make_jaxpr(jax.grad(loss))(trainable, params, x, y).jaxpr
    found[forward] = {(e.primitive.name, tuple(v.aval.shape)) for e in _eqns(jaxpr)
                      for v in e.outvars if tuple(v.aval.shape) in full}

    def step(t, s, frozen, x, y):
      g = jax.grad(loss)(t, frozen, x, y)
      u, s = opt.update(g, s, t)
      return optax.apply_updates(t, u), s
    compiled = jax.jit(step).lower(trainable, jax.eval_shape(opt.init, trainable), params,
                                   x, y).compile()
    temp[forward] = compiled.memory_analysis().temp_size_in_bytes
  print(f'{kind}: compiled step temp bytes, merged {temp[False]:,} vs forward terms '
        f'{temp[True]:,}')
  assert any(name == 'dot_general' for name, _ in found[False])   # dW = x^T dy, merged
  assert not found[True]     # no equation at all makes an array of a target's shape
  assert temp[True] < temp[False]


# --- what stays merged --------------------------------------------------------------------

def test_kernel_no_dense_multiplies_is_merged_and_still_trained():
  """A target in a layer of one's own (mlp's BiasRowDense, the bias as the
  kernel's last row) is found unreached at tracing and merged; the plain
  nn.Dense target beside it takes the forward term."""
  class Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3, name='dense')(nn.relu(BiasRowDense(8, name='own')(x)))

  model = Mixed()
  x = jax.random.normal(jax.random.key(0), (6, 10))
  y = jnp.arange(6) % 3
  params = model.init(jax.random.key(1), x)['params']
  method = _method('row', params, 'kernel', rows=2)
  assert peft_forward.forward_targets(model, method, params) == {'own/kernel', 'dense/kernel'}
  _assert_same(model, method, params, x, y, seeds=(0,))
  assert _loss_and_grad(model, method, True)[2]._merged_anyway == {'own/kernel'}


def test_conv_unstructured_full_and_nnx_targets_are_merged():
  class ConvDense(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(nn.Conv(4, (3, 3), name='conv')(x))
      return nn.Dense(3, name='dense')(x.reshape(x.shape[0], -1))

  model = ConvDense()
  x = jax.random.normal(jax.random.key(0), (4, 5, 5, 2))
  y = jnp.arange(4) % 3
  params = model.init(jax.random.key(1), x)['params']
  method = _method('row', params, 'kernel', rows=2)
  assert set(method.targets) == {'conv/kernel', 'dense/kernel'}
  assert peft_forward.forward_targets(model, method, params) == {'dense/kernel'}
  _assert_same(model, method, params, x, y, seeds=(0,))
  for kind in ('unstructured', 'full'):
    assert not peft_forward.forward_targets(model, pm.Method(kind, method.targets), params)
  from sparsejax.train.task import nnx_model
  from flax import nnx
  wrapped = nnx_model(nnx.Linear(3, 2, rngs=nnx.Rngs(0)))
  assert not peft_forward.forward_targets(wrapped, pm.Method('row', ('kernel',), rows=((0,),)),
                                          {'kernel': jnp.zeros((3, 2))})


def test_merged_params_are_still_the_merged_weights():
  model, params, x, _ = _mlp()
  method = _method('row', params, r'hidden_\d/kernel', head=('output/kernel', 'output/bias'))
  trainable = _random_trainable(method, params, 0)
  merged = method.merged_params(params, trainable)
  rows = dict(zip(method.targets, method.rows))
  for p, w in tree_lib.leaves_with_paths(params):
    got = dict(tree_lib.leaves_with_paths(merged))[p]
    if p in rows:
      want = np.asarray(w).copy()
      want[:, list(rows[p])] += np.asarray(trainable['rows'][p]).T
      np.testing.assert_allclose(got, want, rtol=1e-6)
  out = pm.Reparametrized(model, method).apply({'params': trainable, 'frozen': params}, x)
  np.testing.assert_allclose(out, model.apply({'params': merged}, x), rtol=1e-5, atol=1e-6)
