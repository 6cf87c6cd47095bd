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

Memory: only the current block's inputs for the calibration batches are
held (one (batch, tokens, width) array per batch; with OWL also the first
block's, kept for the pruning pass), never every block's activations.

OWL (`owl=OWL()`, Yin et al. 2024; see `owl`) first runs the dense model
block by block to measure each block's outlier ratio from Wanda's scores,
then prunes block l to its own sparsity S_l (unstructured targets only).
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Callable, Iterable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from sparsejax.core import masks as masks_lib, tree as tree_lib
from sparsejax.posttrain import blocks as blocks_lib, nnx_layers
from sparsejax.posttrain import owl as owl_lib, sparsegpt as sparsegpt_lib, wanda as wanda_lib
from sparsejax.posttrain.blocks import Enough
from sparsejax.posttrain.owl import OWL
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


def _resolved_options(method: str, prune_fn, options: dict | None) -> dict:
  """The method's keyword options with their defaults (read from its
  signature: the defaults live there) filled in, for the report; an option
  the method does not take is an error before any work."""
  known = {k: p.default for k, p in inspect.signature(prune_fn).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY}
  unknown = sorted(set(options or {}) - set(known))
  if unknown:
    raise ValueError(f'{method} takes no option {unknown[0]!r}'
                     + (f'; its options: {sorted(known)}' if known else ''))
  return {**known, **(options or {})}


def _owl_sparsities(found, block_inputs, weights, rule, target, owl: OWL) -> tuple[list, list]:
  """(outlier ratio D_l, sparsity S_l) per block: each block's Dense
  kernels scored by Wanda's |W_ij| ||X_j|| on the inputs of the dense model,
  one block's inputs held at a time."""
  ratios = []
  for name, block in found:
    groups, counts = dense_groups(block, *block_inputs[0])
    todo = [p for g in groups for p in g if rule(_full(name, p), block.kernel(p))]
    if todo:
      grams, _ = accumulate_grams(block, block_inputs, weights, {p: counts[p] for p in todo})
      ratios.append(owl_lib.outlier_ratio(
          [wanda_lib.wanda_scores(block.kernel(p), grams[p]) for p in todo], owl.m))
    else:
      ratios.append(None)
    if name != found[-1][0]:
      block_inputs = [blocks_lib.next_inputs(block, *a) for a in block_inputs]
  seen = [r for r in ratios if r is not None]
  sparsities = iter(owl_lib.owl_sparsities(seen, target.sparsity, owl.lam))
  return ratios, [None if r is None else float(next(sparsities)) for r in ratios]


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
                options: dict | None = None, owl: OWL | None = None,
                apply_kwargs: dict | None = None,
                log: Callable | None = None) -> tuple[PyTree, PyTree, dict]:
  """Prunes every prunable Dense kernel inside the model's blocks, layer by layer.

  `model` is a Flax Linen module, or a Flax NNX model wrapped by
  `sparsejax.train.task.nnx_model` (its params and model state as the
  wrapper gives them; its blocks are attributes, its Dense layers nnx.Linear).
  `batches` yields model inputs (the first argument of `model.apply`);
  `method` is 'magnitude', 'wanda' or 'sparsegpt' (`options`: percdamp,
  blocksize, per_row: SparseGPT's mask is chosen jointly over each block of
  inputs, as in the paper, unless per_row=True); give `sparsity`
  (unstructured) or `nm` ('2:4', (4, 8)). `owl=OWL(m, lam)` gives each block
  its own unstructured sparsity, averaging `sparsity` (Yin et al. 2024).
  `valid_tokens(x) -> (B, T) bool` leaves padding out of the statistics.
  Returns (params, masks, report): masks are bool at every leaf `rule`
  accepts (all True where not pruned) and None elsewhere, the tree that
  `FixedMask(masks=...)` and fine-tuning take; pruned weights are exactly 0.
  Ties in a score keep the lower index (see `target`).
  """
  if method not in METHODS:
    raise ValueError(f'unknown pruning method {method!r}; choose from {sorted(METHODS)}')
  if not isinstance(model, nn.Module) and not nnx_layers.is_nnx(model):
    raise TypeError(f'prune_model takes a Flax Linen module or an NNX model wrapped by '
                    f'sparsejax.train.task.nnx_model, got {type(model).__name__}')
  target = Target(sparsity, nm)
  if owl is not None and target.nm is not None:
    raise ValueError('OWL allocates unstructured sparsities; give sparsity, not nm')
  prune_fn = METHODS[method]
  resolved = _resolved_options(method, prune_fn, options)
  options = dict(options or {})
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
  targets, owl_report = [target] * len(found), None
  if owl is not None:
    ratios, per_block = _owl_sparsities(found, block_inputs, weights, rule, target, owl)
    targets = [target if s is None else Target(s) for s in per_block]
    owl_report = {'m': owl.m, 'lambda': owl.lam,
                  'outlier_ratios': dict(zip([n for n, _ in found], ratios)),
                  'sparsities': dict(zip([n for n, _ in found], per_block))}
  new_masks, layers, tokens = {}, [], 0.0
  for (name, block), block_target in zip(found, targets):
    tokens = _prune_block(name, block, block_inputs, weights, prune_fn, block_target, options,
                          rule, sequential, new_masks, layers, log)
    if name != found[-1][0]:
      block_inputs = [blocks_lib.next_inputs(block, *a) for a in block_inputs]
  masks = tree_lib.map_with_path(
      lambda path, m: new_masks.get(path, m), masks_lib.dense_masks(new_params, rule))
  pruned = sum(float(jnp.sum(~m)) for m in new_masks.values())
  report = {'method': method, 'target': target.describe(), 'sparsity': target.fraction,
            'pruned_fraction': pruned / max(1, sum(m.size for m in new_masks.values())),
            'options': resolved, 'owl': owl_report, 'sequential': sequential,
            'calibration_batches': len(inputs), 'calibration_tokens': tokens,
            'blocks': [n for n, _ in found], 'layers': layers,
            'left_dense': [p for p, m in tree_lib.leaves_with_paths(masks)
                           if p not in new_masks],
            'seconds': time.perf_counter() - start}
  return new_params, masks, report
