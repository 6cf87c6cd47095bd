"""Row and LoRA deltas as extra terms of the forward pass, not merged weights.

Merging (`Method.merge`: W + scatter(row delta), W + scale * A @ B) gives the
base model full weights, so the gradient of a delta flows through the
cotangent of the whole merged kernel, dW = x^T dy of shape (d_in, d_out), for
every target: the memory and FLOPs of fully fine-tuning those matrices. Here
the base model gets the frozen, unmerged kernel and the targeted Linen
`nn.Dense` layers are intercepted (`flax.linen.intercept_methods`) to add
their delta's term to the frozen layer's output y = x @ W (+ b):

- row (Li & Bhaskara 2025): y[..., idx] += x @ delta.T, delta (r, d_in); the
  gradient of delta is dy[..., idx]^T x, (r, d_in), and no (d_in, d_out)
  array exists in the backward pass;
- LoRA (Hu et al. 2022): y += scale * (x @ A) @ B; the gradients are x^T (dy
  B^T) scale and (x A)^T dy scale, (d_in, rank) and (rank, d_out).

The term follows the layer's own dtype rules (its `promote_dtype` with its
`dtype`, its `precision`): a bf16-compute layer adds a bf16 term. In exact
arithmetic both paths give the same outputs and gradients; in float32 they
agree to rounding.

Which path each target takes (`forward_targets`, chosen per target):

- extra term: the 'row' and 'lora' methods, a base that is a Linen module,
  a 2-D leaf named 'kernel' (not a head path) that a plain `nn.Dense` (or a
  subclass that keeps its `__call__`, with Flax's default dot_general) at that
  module path multiplies: `nn.remat`'d blocks (llama's `remat`) included, the
  term being recomputed with the block;
- merged: 'unstructured' (its deltas are single weights anywhere in the
  matrix, so their gradient is a gather from the dense dW anyway) and 'full'
  (nothing to factor); Conv (4-D) kernels (a row of a conv is an output
  channel's kh*kw*c_in weights; not done here); NNX-wrapped models
  (`nnx_model`: no Linen methods to intercept) and any base that is not a
  Linen module; and a 2-D target that no plain nn.Dense multiplies (a layer of
  one's own, such as mlp's BiasRowDense, an Einsum, a Dense with a custom
  dot_general). The last is found while tracing: the targets no intercepted
  Dense reached are merged and the call is traced again (once per model: the
  `Reparametrized` remembers them), so a target is never left out.

Not detected: a target kernel that a plain nn.Dense multiplies and that the
model also reads some other way (e.g. `self.variables`), which would see the
unmerged weights there. `Method.merged_params` (export, merge, evaluation of
a saved run) always gives the merged weights.
"""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import numpy as np

from sparsejax.core import tree as tree_lib

FORWARD_KINDS = ('row', 'lora')


def forward_targets(base, method, frozen) -> frozenset[str]:
  """The targets of `method` eligible for the extra-term path (see the module
  docstring); whether a plain nn.Dense multiplies them is found at tracing."""
  if method.kind not in FORWARD_KINDS or frozen is None or not isinstance(base, nn.Module):
    return frozenset()
  shapes = {p: x.shape for p, x in tree_lib.leaves_with_paths(frozen)}
  return frozenset(p for p in method.targets
                   if p not in method.head and p in shapes and len(shapes[p]) == 2
                   and p.rsplit('/', 1)[-1] == 'kernel')


def plain_dense(module) -> bool:
  """An nn.Dense computing inputs @ kernel (+ bias) with lax.dot_general."""
  return (isinstance(module, nn.Dense) and type(module).__call__ is nn.Dense.__call__
          and getattr(module, 'dot_general', None) is None
          and getattr(module, 'dot_general_cls', None) is None)


@contextlib.contextmanager
def extra_terms(method, trainable: dict, targets: frozenset):
  """Within: every plain nn.Dense whose kernel path is in `targets` adds its
  row or LoRA term to its output; yields the set of targets reached so far."""
  rows = dict(zip(method.targets, method.rows))
  reached: set[str] = set()
  if not targets:      # every target merged: nothing to intercept
    yield reached
    return

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != '__call__' or not plain_dense(module):
      return next_fun(*args, **kwargs)
    path = '/'.join((*module.path, 'kernel'))
    if path not in targets:
      return next_fun(*args, **kwargs)
    x = args[0] if args else kwargs['inputs']
    y = next_fun(*args, **kwargs)
    reached.add(path)
    if method.kind == 'row':
      return row_term(module, x, y, rows[path], trainable['rows'][path])
    ab = trainable['lora'][path]
    return lora_term(module, x, y, ab['a'], ab['b'], method.scale)

  with nn.intercept_methods(intercept):
    yield reached


def _matmul(module, x, w):
  """x @ w over x's last axis and w's first, at the layer's precision."""
  return jax.lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())),
                             precision=module.precision)


def row_term(module, x, y, idx, delta):
  """y with x @ delta.T added at output columns `idx`: W + scatter(delta)
  applied without forming it. Cast as the layer casts its kernel."""
  idx = np.asarray(idx, np.int32)
  if idx.size == 0:
    return y
  x, delta, _ = module.promote_dtype(x, delta, None, dtype=module.dtype)
  part = jax.lax.dot_general(x, delta, (((x.ndim - 1,), (1,)), ((), ())),
                             precision=module.precision)               # (..., r)
  ordered = bool(np.all(np.diff(idx) > 0))      # sorted and distinct (chosen rows are)
  return y.at[..., idx].add(part.astype(y.dtype), indices_are_sorted=ordered,
                            unique_indices=ordered)


def lora_term(module, x, y, a, b, scale: float):
  """y + scale * (x @ A) @ B, in the layer's compute dtype."""
  x, a, b = module.promote_dtype(x, a, b, dtype=module.dtype)
  out = _matmul(module, _matmul(module, x, a), b) * scale
  return y + out.astype(y.dtype)
