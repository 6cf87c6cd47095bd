"""An export run and checked: its sparse kernels multiplied by in the model
(`sparse_apply`), and its outputs against the masked dense model's
(`verify_report`).

`sparse_apply` runs a model on the leaves `export_formats.load` gives (CSR
as `jax.experimental.sparse` BCOO arrays, ELL as
`sparse_inference.EllMatrix`) with its Linen nn.Dense and NNX nnx.Linear
layers computing sparse-dense products; a sparse leaf used any other way is
an error there, never a product with a placeholder. (`sparse.sparsify` over
a whole Flax model fails here on custom-JVP activations such as relu, hence
the interception of the layers.)

Whatever the format, the outputs equal the masked dense model's:
`verify_report` checks that on given inputs, within `tolerance` (1e-5 of
max(1, max |output|)).
"""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from sparsejax.core import tree as tree_lib
from sparsejax.programs import sparse_inference
from sparsejax.programs.export_formats import ExportError, load

TOLERANCE = 1e-5    # of max |output difference|, relative to max(1, max |output|)


class SparseUnsupported(ExportError):
  """Sparse leaves of an export that `sparse_apply` cannot multiply by (no
  nn.Dense or nnx.Linear used them); `leaves` names them."""

  def __init__(self, leaves):
    self.leaves = list(leaves)
    more = f' (and {len(self.leaves) - 1} more)' if len(self.leaves) > 1 else ''
    super().__init__(
        f'leaf {self.leaves[0]!r}{more} is stored sparse, but no nn.Dense or nnx.Linear '
        'multiplied by it: sparse_apply runs only those layers sparse, and would have '
        'computed with a placeholder for it. Load this export with as_sparse=False')


class CheckedDense(UserWarning):
  """`verify_report` checked an export loaded dense: its sparse products
  could not run (`SparseUnsupported`)."""


def _is_sparse(leaf) -> bool:
  return isinstance(leaf, (sparse.BCOO, sparse_inference.EllMatrix))


def sparse_apply(apply_fn, params, x, *, model_state=None, **kwargs):
  """Runs `apply_fn({'params': ..., **model_state}, x, **kwargs)` with every
  layer whose kernel is a BCOO array or an EllMatrix computing x @ kernel as
  a sparse-dense product (`jax.experimental.sparse`, `sparse_inference.matmul`):
  Linen `nn.Dense` (intercepted by `nn.intercept_methods`) and, for an NNX
  model (`apply_fn` the `apply` of a `task.nnx_model`), `nnx.Linear` (its
  `dot_general` replaced). Other layers run as usual.

  The sparse leaves reach the model as NaN placeholders of their shape, and a
  sparse leaf that no such layer multiplied by raises `SparseUnsupported`
  naming it: other uses of a 2-D kernel (`x @ self.param(...)`, an embedding,
  a custom layer) cannot run sparse here, and computing with the placeholder
  would give a wrong answer. Load such an export with `as_sparse=False`."""
  import flax.linen as nn
  from sparsejax.train.task import nnx_model
  is_sparse = _is_sparse
  kernels = {p: k for p, k in tree_lib.leaves_with_paths(params, is_leaf=is_sparse)
             if is_sparse(k)}
  placeholders = jax.tree.map(lambda l: jnp.full(l.shape, jnp.nan, l.dtype) if is_sparse(l)
                              else l, params, is_leaf=is_sparse)
  used = set()

  def product(path, inputs):
    used.add(path)
    kernel = kernels[path]
    if isinstance(kernel, sparse_inference.EllMatrix):
      return sparse_inference.matmul(inputs, kernel)
    return jnp.asarray(inputs) @ kernel   # numpy @ BCOO would loop in Python

  def intercept(next_fun, args, kw, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      path = '/'.join([*context.module.path, 'kernel'])
      if path in kernels:
        y = product(path, args[0])
        if context.module.use_bias:
          bias = context.module.variables['params']['bias']
          y = y + bias.reshape((1,) * (y.ndim - 1) + bias.shape)
        return y
    return next_fun(*args, **kw)

  if kernels and isinstance(getattr(apply_fn, '__self__', None), nnx_model):
    kwargs['module_hook'] = functools.partial(_sparse_linears, kernels=kernels, product=product)
  with nn.intercept_methods(intercept):
    out = apply_fn({'params': placeholders, **(model_state or {})}, x, **kwargs)
  unused = [p for p in kernels if p not in used]
  if unused:
    raise SparseUnsupported(unused)
  return out


def _sparse_linears(module, kernels, product):
  """Gives each nnx.Linear of `module` whose kernel is in `kernels` a
  `dot_general` that computes `product(path, inputs)` (nnx.Linear calls
  dot_general(inputs, kernel, contraction of inputs' last axis with the
  kernel's first), then adds its bias)."""
  from flax import nnx

  def dot(path, inputs, kernel, dimension_numbers, precision=None, **kw):
    del precision, kw
    if tuple(map(tuple, dimension_numbers[0])) != ((inputs.ndim - 1,), (0,)):
      raise ExportError(f'leaf {path!r}: nnx.Linear called dot_general with dimension '
                        f'numbers {dimension_numbers}, not x @ kernel')
    y = product(path, inputs)
    return y.astype(jnp.result_type(inputs.dtype, kernel.dtype))

  for where, node in nnx.iter_graph(module):
    path = '/'.join([*map(str, where), 'kernel'])
    if isinstance(node, nnx.Linear) and path in kernels:
      node.dot_general = functools.partial(dot, path)


def tolerance(reference) -> float:
  """The largest max |output difference| a check accepts against the
  outputs `reference`: TOLERANCE * max(1, max |reference|), relative for
  large outputs, absolute near zero (float32 sums of the same products in
  another order differ by a few ulps of the largest terms)."""
  leaves = [jnp.max(jnp.abs(jnp.asarray(r))) for r in jax.tree.leaves(reference)]
  return TOLERANCE * max([1.0, *(float(m) for m in leaves)])


def verify_report(apply_fn, params, model_state, x, export_dir, **apply_kwargs) -> dict:
  """The exported model (`export_dir`) against the masked dense model
  (`params`, `model_state`) on inputs `x`; `apply_fn` is a Linen-style
  apply(variables, x, **apply_kwargs) (an `nnx_model`'s apply for NNX).

  The export runs with its sparse kernels through `sparse_apply`. When the
  model multiplies by a sparse leaf outside nn.Dense / nnx.Linear, sparse
  products cannot run: the export is checked loaded dense instead, with a
  warning, and the report says so. Returns {'max_abs_diff', 'tolerance' (see
  `tolerance`), 'ok', 'examples', 'sparse_products' (whether the sparse
  kernels were exercised), 'dense_leaves' (sparse leaves checked dense)}."""
  want = apply_fn({'params': params, **(model_state or {})}, x, **apply_kwargs)
  loaded, state = load(export_dir, as_sparse=True)
  has_sparse = any(_is_sparse(l) for l in jax.tree.leaves(loaded, is_leaf=_is_sparse))
  dense_leaves, got = [], None
  if has_sparse:
    try:
      run = jax.jit(lambda p, s, x: sparse_apply(apply_fn, p, x, model_state=s,   # one program,
                                                 **apply_kwargs))            # not op by op
      got = run(loaded, state, x)
    except SparseUnsupported as e:
      dense_leaves = e.leaves
      warnings.warn(f'{e}; verifying the export loaded dense (as_sparse=False): its sparse '
                    'products were not exercised', CheckedDense, stacklevel=2)
  if got is None:
    loaded, state = load(export_dir, as_sparse=False)
    got = apply_fn({'params': loaded, **state}, x, **apply_kwargs)
  got, want = jax.tree.leaves(got), jax.tree.leaves(want)
  if len(got) != len(want):
    raise ExportError(f'the exported model gave {len(got)} outputs, the model {len(want)}')
  diff = float(np.max([jnp.max(jnp.abs(jnp.asarray(g) - jnp.asarray(w)))   # NaN stays NaN
                       for g, w in zip(got, want)]))
  tol = tolerance(want)
  return {'max_abs_diff': diff, 'tolerance': tol, 'ok': bool(diff <= tol),
          'examples': int(jax.tree.leaves(x)[0].shape[0]),
          'sparse_products': has_sparse and not dense_leaves, 'dense_leaves': dense_leaves}


def verify(apply_fn, params, model_state, x, export_dir, **apply_kwargs) -> float:
  """Max |output difference| between the exported model and the masked dense
  model (`params`, `model_state`) on inputs `x` (not finite when an output
  is not); `verify_report` has the tolerance and what was exercised."""
  return verify_report(apply_fn, params, model_state, x, export_dir,
                       **apply_kwargs)['max_abs_diff']

