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
its first argument; a prunable layer is any Dense layer inside a block (Flax
Linen `nn.Dense`, or `nnx.Linear` of a Flax NNX model wrapped by
`nnx_model`) whose kernel the rule accepts. `blocks` finds the blocks, their
inputs and their layers' inputs for both kinds of model. A weight inside a
block that the rule accepts but no Dense layer of the block multiplies is an
error before any work (it would be left dense while the report claims the
sparsity); embeddings, the final norm and the output head, outside the
blocks, are left dense, as in both papers.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.core import masks as masks_lib, tree as tree_lib
from sparsejax.posttrain import blocks as blocks_lib, nnx_layers
from sparsejax.posttrain import sparsegpt as sparsegpt_lib, wanda as wanda_lib
from sparsejax.posttrain.blocks import Enough
from sparsejax.posttrain.target import Target, reconstruction_error

PyTree = Any
BLOCKS = r'^(block|layer)_\d+$'
METHODS = {'magnitude': wanda_lib.prune_magnitude, 'wanda': wanda_lib.prune_wanda,
           'sparsegpt': sparsegpt_lib.prune_sparsegpt}


def dense_groups(block, args, kwargs) -> tuple[list[list[tuple]], dict]:
  """(paths within the block of its Dense layers in call order, grouped by
  shared input: consecutive calls on the very same array form a group;
  {path: calls per forward pass}); traces shapes only."""
  calls = []
  block.run_seeing(args, kwargs, lambda path, x: calls.append((path, x)), traced=True)
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


def accumulate_grams(block, inputs: list, weights: list, counts: dict) -> tuple[dict, float]:
  """({path: X^T X over the inputs of that Dense}, tokens counted) for the
  Dense layers in `counts` ({path: calls per pass}), summed over the
  calibration inputs; tokens of weight 0 (padding) do not count. Each pass
  stops at the last call it needs, before running that layer."""
  grams: dict = {}
  tokens = 0.0
  for (args, kwargs), w in zip(inputs, weights):
    left = dict(counts)

    def see(path, x):
      if not left.get(path):
        return
      shape = x.shape
      x = jnp.asarray(x, jnp.float32)
      x = x.reshape(-1, x.shape[-1])
      if w is not None:
        if w.size != x.shape[0]:
          raise ValueError(f'token weights of shape {w.shape} do not fit the inputs '
                           f'{shape} of {"/".join(map(str, path))}')
        x = x * w.reshape(-1, 1)
      g = jnp.matmul(x.T, x, precision=jax.lax.Precision.HIGHEST)
      grams[path] = g if path not in grams else grams[path] + g
      left[path] -= 1
      if not any(left.values()):
        raise Enough

    try:
      block.run_seeing(args, kwargs, see)
    except Enough:
      pass
    if any(left.values()):
      raise ValueError(f'a forward pass of the block did not call '
                       f'{["/".join(map(str, p)) for p, n in left.items() if n]}')
    tokens += float(args[0].size // args[0].shape[-1] if w is None else jnp.sum(w))
  return grams, tokens


def _full(name, path) -> str:
  return '/'.join(map(str, (name, *path, 'kernel')))


def _prune_block(name, block, block_inputs, weights, prune_fn, target, options, rule,
                 sequential, new_masks, layers, log) -> float:
  """Prunes one block's Dense kernels in place (group by group, each from the
  inputs that the block with the groups before it pruned gives); records
  their masks and report rows; returns the calibration tokens counted."""
  groups, counts = dense_groups(block, *block_inputs[0])
  if not sequential:
    groups = [[p for g in groups for p in g]]
  tokens = 0.0
  for group in groups:
    todo = [p for p in group if rule(_full(name, p), block.kernel(p))]
    if not todo:
      continue
    grams, tokens = accumulate_grams(block, block_inputs, weights,
                                     {p: counts[p] for p in todo})
    for p in todo:
      full = _full(name, p)
      kernel = block.kernel(p)
      t0 = time.perf_counter()
      pruned, mask = jax.block_until_ready(prune_fn(kernel, grams[p], target, **options))
      block.set_kernel(p, pruned)
      new_masks[full] = mask
      err, rel = reconstruction_error(kernel, pruned, grams[p])
      layers.append({'path': full, 'shape': tuple(kernel.shape),
                     'sparsity': float(1.0 - jnp.mean(mask)), 'error': err,
                     'relative_error': rel, 'seconds': time.perf_counter() - t0})
      if log:
        log(f'{full} {tuple(kernel.shape)}: sparsity {layers[-1]["sparsity"]:.3f}, '
            f'relative error {rel:.4f}')
  return tokens


def _check_targets(found, params, dense: set, rule, target) -> None:
  """Before any work: every leaf inside a block that the rule accepts must be
  the 2-D kernel of a Dense layer the block calls (else it would be left
  dense, silently), and fit the target's pattern."""
  for name, _ in found:
    for path, leaf in tree_lib.leaves_with_paths(params[name]):
      full = f'{name}/{path}'
      if not rule(full, leaf):
        continue
      if full not in dense:
        raise ValueError(
            f'{full!r} {tuple(leaf.shape)} is prunable (the prunable rule accepts it) but is '
            'not the kernel of a Dense layer its block calls (Flax Linen nn.Dense, or '
            'nnx.Linear of an NNX model), the only layers post-training pruning prunes; '
            'exclude it from the prunable leaves (pruning.exclude, PrunableRule(exclude=...)) '
            'rather than have it left dense')
      target.check(full, leaf.shape)


def prune_model(model, params: PyTree, batches: Iterable, method: str = 'wanda',
                *, sparsity: float | None = None, nm=None, model_state: dict | None = None,
                rule: Callable = tree_lib.DEFAULT_RULE, blocks: str = BLOCKS,
                valid_tokens: Callable | None = None, sequential: bool = True,
                options: dict | None = None, apply_kwargs: dict | None = None,
                log: Callable | None = None) -> tuple[PyTree, PyTree, dict]:
  """Prunes every prunable Dense kernel inside the model's blocks, layer by layer.

  `model` is a Flax Linen module, or a Flax NNX model wrapped by
  `sparsejax.train.task.nnx_model` (its params and model state as the
  wrapper gives them; its blocks are attributes, its Dense layers nnx.Linear).
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
  if not isinstance(model, nn.Module) and not nnx_layers.is_nnx(model):
    raise TypeError(f'prune_model takes a Flax Linen module or an NNX model wrapped by '
                    f'sparsejax.train.task.nnx_model, got {type(model).__name__}')
  target = Target(sparsity, nm)
  prune_fn, options = METHODS[method], dict(options or {})
  apply_kwargs = {'train': False} if apply_kwargs is None else dict(apply_kwargs)
  inputs = [jnp.asarray(x) for x in batches]
  if not inputs:
    raise ValueError('no calibration batches')
  start = time.perf_counter()
  new_params = flax.core.unfreeze(params)   # a fresh tree of dicts
  found, block_inputs, dense = blocks_lib.find_blocks(model, new_params, model_state, inputs,
                                                      apply_kwargs, blocks)
  _check_targets(found, new_params, dense, rule, target)   # settle every question first
  weights = [None if valid_tokens is None else jnp.asarray(valid_tokens(x), jnp.float32)
             for x in inputs]
  new_masks, layers, tokens = {}, [], 0.0
  for name, block in found:
    tokens = _prune_block(name, block, block_inputs, weights, prune_fn, target, options, rule,
                          sequential, new_masks, layers, log)
    block_inputs = [((block(args, kwargs), *args[1:]), kwargs) for args, kwargs in block_inputs]
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
