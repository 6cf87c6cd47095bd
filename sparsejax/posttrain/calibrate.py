"""Layer-by-layer post-training pruning of a Flax Linen Transformer with
calibration batches, the protocol of SparseGPT (Frantar & Alistarh 2023) and
Wanda (Sun et al. 2023).

The calibration inputs run through the model once, dense, up to the first
block; then, block by block, the block's Dense layers are pruned from the
inputs they receive and the block's output, computed with its pruned weights,
becomes the next block's input, so every block is pruned against the inputs
that the already-pruned blocks before it produce. Within a block the Dense
layers are pruned in the order they are called, in groups that share one
input (query, key and value; then out; then fc_in; then fc_out), each group
from the inputs computed with the groups before it already pruned
(`sequential=True`; `False` takes every input from one pass of the dense
block, as the papers' reference scripts do).

Nothing here knows a model class: a block is any direct submodule whose name
matches `blocks` (default `block_<i>` of models/transformer.py and
`layer_<i>` of models/bert.py) and that takes the previous block's output as
its first argument; a prunable layer is any `nn.Dense` inside a block whose
kernel the rule accepts. The inputs are found with `nn.intercept_methods`,
and a block is run alone as an unbound clone of its module. Embeddings, the
final norm and the output head are left dense, as in both papers.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.core import masks as masks_lib, tree as tree_lib
from sparsejax.posttrain import sparsegpt as sparsegpt_lib, wanda as wanda_lib
from sparsejax.posttrain.target import Target, reconstruction_error

PyTree = Any
BLOCKS = r'^(block|layer)_\d+$'
METHODS = {'magnitude': wanda_lib.prune_magnitude, 'wanda': wanda_lib.prune_wanda,
           'sparsegpt': sparsegpt_lib.prune_sparsegpt}


def _same(a, b) -> bool:
  return a is b or (not isinstance(a, jax.Array) and not isinstance(b, jax.Array) and a == b)


class _Enough(Exception):
  """Raised to end a forward pass once every input it was run for is seen."""


def _is_block(context, pattern: str) -> bool:
  m = context.module
  return (context.method_name == '__call__' and len(m.path) == 1
          and re.search(pattern, m.name or '') is not None)


def find_blocks(model: nn.Module, variables: dict, inputs: list, apply_kwargs: dict,
                pattern: str = BLOCKS):
  """([(name, unbound block module)], [(args, kwargs) of the first block per input]).

  Traces the model (no compute) to find its blocks and to check that each
  takes the previous block's output as its first argument, its other
  arguments unchanged; then runs every input up to the first block.
  """
  calls = []

  def trace(next_fun, args, kwargs, context):
    if not _is_block(context, pattern):
      return next_fun(*args, **kwargs)
    out = next_fun(*args, **kwargs)
    calls.append((context.module.name, context.module.clone(parent=None, name=None),
                  args, kwargs, out))
    return out

  with nn.intercept_methods(trace):
    jax.eval_shape(lambda: model.apply(variables, inputs[0], **apply_kwargs))
  if not calls:
    raise ValueError(f'no submodule of {type(model).__name__} matches the block pattern '
                     f'{pattern!r}')
  names = [c[0] for c in calls]
  if len(set(names)) != len(names):
    raise ValueError(f'blocks are called more than once: {names}')
  for prev, cur in zip(calls, calls[1:]):
    args, kwargs = cur[2], cur[3]
    if (not args or args[0] is not prev[4] or len(args) != len(prev[2])
        or not all(_same(a, b) for a, b in zip(args[1:], prev[2][1:]))
        or kwargs.keys() != prev[3].keys()
        or not all(_same(kwargs[k], prev[3][k]) for k in kwargs)):
      raise ValueError(f'block {cur[0]!r} does not take the output of {prev[0]!r} as its '
                       'first argument with the other arguments unchanged; layer-by-'
                       'layer pruning needs chained blocks')
  first_args = []

  def capture(next_fun, args, kwargs, context):
    if not _is_block(context, pattern):
      return next_fun(*args, **kwargs)
    first_args.append((args, kwargs))
    raise _Enough

  for x in inputs:
    try:
      with nn.intercept_methods(capture):
        model.apply(variables, x, **apply_kwargs)
    except _Enough:
      pass
  return [(c[0], c[1]) for c in calls], first_args


def dense_groups(module: nn.Module, variables: dict, args, kwargs
                 ) -> tuple[list[list[tuple]], dict]:
  """(paths within the block of its nn.Dense layers in call order, grouped by
  shared input: consecutive calls on the very same array form a group;
  {path: calls per forward pass})."""
  calls = []

  def interceptor(next_fun, a, kw, context):
    if isinstance(context.module, nn.Dense) and context.method_name == '__call__':
      calls.append((tuple(context.module.path), a[0]))
    return next_fun(*a, **kw)

  with nn.intercept_methods(interceptor):
    jax.eval_shape(lambda: module.apply(variables, *args, **kwargs))
  groups, counts = [], {}
  for k, (path, x) in enumerate(calls):
    counts[path] = counts.get(path, 0) + 1
    if counts[path] > 1:     # called again: its statistics cover every call
      continue
    if groups and k > 0 and x is calls[k - 1][1] and calls[k - 1][0] in groups[-1]:
      groups[-1].append(path)
    else:
      groups.append([path])
  return groups, counts


def accumulate_grams(module: nn.Module, variables: dict, inputs: list, weights: list,
                     counts: dict) -> tuple[dict, float]:
  """({path: X^T X over the inputs of that Dense}, tokens counted) for the
  Dense layers in `counts` ({path: calls per pass}), summed over the
  calibration inputs; tokens of weight 0 (padding) do not count. Each pass
  stops at the last call it needs, before running that layer."""
  grams: dict = {}
  tokens = 0.0
  for (args, kwargs), w in zip(inputs, weights):
    left = dict(counts)

    def interceptor(next_fun, a, kw, context):
      path = tuple(context.module.path)
      if not (isinstance(context.module, nn.Dense) and context.method_name == '__call__'
              and left.get(path)):
        return next_fun(*a, **kw)
      x = jnp.asarray(a[0], jnp.float32)
      x = x.reshape(-1, x.shape[-1])
      if w is not None:
        if w.size != x.shape[0]:
          raise ValueError(f'token weights of shape {w.shape} do not fit the inputs '
                           f'{a[0].shape} of {"/".join(path)}')
        x = x * w.reshape(-1, 1)
      g = jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST)
      grams[path] = g if path not in grams else grams[path] + g
      left[path] -= 1
      if not any(left.values()):
        raise _Enough
      return next_fun(*a, **kw)

    try:
      with nn.intercept_methods(interceptor):
        module.apply(variables, *args, **kwargs)
    except _Enough:
      pass
    if any(left.values()):
      raise ValueError(f'a forward pass of the block did not call '
                       f'{["/".join(p) for p, n in left.items() if n]}')
    tokens += float(args[0].size // args[0].shape[-1] if w is None else jnp.sum(w))
  return grams, tokens


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  for k in path[:-1]:
    tree = tree[k]
  tree[path[-1]] = value


def _prune_block(name, module, block_vars, block_inputs, weights, prune_fn, target, options,
                 rule, sequential, new_masks, layers, log) -> float:
  """Prunes one block's Dense kernels in place (group by group, each from the
  inputs that the block with the groups before it pruned gives); records
  their masks and report rows; returns the calibration tokens counted."""
  groups, counts = dense_groups(module, block_vars, *block_inputs[0])
  if not sequential:
    groups = [[p for g in groups for p in g]]
  tokens = 0.0
  for group in groups:
    todo = [p for p in group
            if rule('/'.join((name, *p, 'kernel')), _get(block_vars['params'], (*p, 'kernel')))]
    if not todo:
      continue
    grams, tokens = accumulate_grams(module, block_vars, block_inputs, weights,
                                     {p: counts[p] for p in todo})
    for p in todo:
      full = '/'.join((name, *p, 'kernel'))
      kernel = _get(block_vars['params'], (*p, 'kernel'))
      t0 = time.perf_counter()
      pruned, mask = jax.block_until_ready(prune_fn(kernel, grams[p], target, **options))
      _set(block_vars['params'], (*p, 'kernel'), pruned)
      new_masks[full] = mask
      err, rel = reconstruction_error(kernel, pruned, grams[p])
      layers.append({'path': full, 'shape': tuple(kernel.shape),
                     'sparsity': float(1.0 - jnp.mean(mask)), 'error': err,
                     'relative_error': rel, 'seconds': time.perf_counter() - t0})
      if log:
        log(f'{full} {tuple(kernel.shape)}: sparsity {layers[-1]["sparsity"]:.3f}, '
            f'relative error {rel:.4f}')
  return tokens


def prune_model(model: nn.Module, params: PyTree, batches: Iterable, method: str = 'wanda',
                *, sparsity: float | None = None, nm=None, model_state: dict | None = None,
                rule: Callable = tree_lib.DEFAULT_RULE, blocks: str = BLOCKS,
                valid_tokens: Callable | None = None, sequential: bool = True,
                options: dict | None = None, apply_kwargs: dict | None = None,
                log: Callable | None = None) -> tuple[PyTree, PyTree, dict]:
  """Prunes every prunable nn.Dense kernel inside the model's blocks, layer by layer.

  `batches` yields model inputs (the first argument of `model.apply`);
  `method` is 'magnitude', 'wanda' or 'sparsegpt' (`options`: percdamp,
  blocksize, per_row); give `sparsity` (unstructured) or `nm` ('2:4', (4, 8)).
  `valid_tokens(x) -> (B, T) bool` leaves padding out of the statistics.
  Returns (params, masks, report): masks are bool at every leaf `rule`
  accepts (all True where not pruned) and None elsewhere, the tree that
  `FixedMask(masks=...)` and fine-tuning take; pruned weights are exactly 0.
  """
  if method not in METHODS:
    raise ValueError(f'unknown pruning method {method!r}; choose from {sorted(METHODS)}')
  if not isinstance(model, nn.Module):
    raise TypeError(f'prune_model takes a Flax Linen module, got {type(model).__name__}')
  target = Target(sparsity, nm)
  prune_fn, options = METHODS[method], dict(options or {})
  apply_kwargs = {'train': False} if apply_kwargs is None else dict(apply_kwargs)
  inputs = [jnp.asarray(x) for x in batches]
  if not inputs:
    raise ValueError('no calibration batches')
  start = time.perf_counter()
  new_params = flax.core.unfreeze(params)   # a fresh tree of dicts
  variables = {'params': new_params, **(model_state or {})}
  found, block_inputs = find_blocks(model, variables, inputs, apply_kwargs, blocks)
  for name, _ in found:    # settle every shape question before any work
    for path, leaf in tree_lib.leaves_with_paths(new_params[name]):
      full = f'{name}/{path}'
      if path.endswith('kernel') and rule(full, leaf) and leaf.ndim == 2:
        target.check(full, leaf.shape)
  weights = [None if valid_tokens is None else jnp.asarray(valid_tokens(x), jnp.float32)
             for x in inputs]
  new_masks, layers, tokens = {}, [], 0.0
  for name, module in found:
    block_vars = {c: v[name] for c, v in variables.items() if name in v}
    tokens = _prune_block(name, module, block_vars, block_inputs, weights, prune_fn, target,
                          options, rule, sequential, new_masks, layers, log)
    block_inputs = [((module.apply(block_vars, *args, **kwargs), *args[1:]), kwargs)
                    for args, kwargs in block_inputs]
  masks = tree_lib.map_with_path(
      lambda path, m: new_masks.get(path, m), masks_lib.dense_masks(new_params, rule))
  report = {'method': method, 'target': target.describe(), 'sparsity': target.fraction,
            'options': options, 'sequential': sequential,
            'calibration_batches': len(inputs), 'calibration_tokens': tokens,
            'blocks': [n for n, _ in found], 'layers': layers,
            'left_dense': [p for p, m in tree_lib.leaves_with_paths(masks)
                           if p not in new_masks],
            'seconds': time.perf_counter() - start}
  return new_params, masks, report
