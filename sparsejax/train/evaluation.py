"""Evaluation over whole splits and the density of a run's masks: what the
training loop reports at every evaluation and in its summary."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core import masks as masks_lib
from sparsejax.core import transform
from sparsejax.data import base as data_base
from sparsejax.train import sharding as sharding_lib
from sparsejax.train.task import SetupError


def evaluate(task, mesh, params, model_state, eval_fn, split: str) -> dict:
  """Mean loss and metrics over a whole split (every example counted once)."""
  source = getattr(task.dataset, split) if split in ('train', 'validation', 'test') else None
  if source is None:
    raise SetupError(f'split {split!r}: dataset {task.dataset.name!r} has no such split '
                     "(use 'train', 'validation' or 'test')")
  total = None
  sl = sharding_lib.process_slice(task.eval_batch_size)
  for x, y, w in data_base.eval_batches(source, task.eval_batch_size):
    out = eval_fn(params, model_state, sharding_lib.put_batch(mesh, (x[sl], y[sl], w[sl])))
    total = out if total is None else jax.tree.map(jnp.add, total, out)
  total = jax.device_get(total)
  n = float(total.pop('count'))
  return {**{k: float(v) / n for k, v in total.items()}, 'examples': int(len(source))}


def per_example(task, mesh, params, model_state, per_example_fn, split: str) -> dict:
  """{'loss', metrics...: numpy arrays, one entry per example of `split` in
  its order (padding dropped)}: `per_example_fn` is a jitted
  Task.eval_per_example. One process only: the examples of other hosts'
  slices would be missing."""
  if jax.process_count() != 1:
    raise SetupError('per-example evaluation runs in one process; '
                     f'this run has {jax.process_count()}')
  source = getattr(task.dataset, split) if split in ('train', 'validation', 'test') else None
  if source is None:
    raise SetupError(f'split {split!r}: dataset {task.dataset.name!r} has no such split')
  parts: dict[str, list] = {}
  for x, y, w in data_base.eval_batches(source, task.eval_batch_size):
    per, _ = jax.device_get(per_example_fn(params, model_state,
                                           sharding_lib.put_batch(mesh, (x, y, w))))
    keep = w > 0
    for k, v in per.items():
      parts.setdefault(k, []).append(np.asarray(v)[keep])
  return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_splits(task, mesh, state, eval_fn, splits) -> dict:
  """{split: evaluate(...)} for the state's params."""
  return {split: evaluate(task, mesh, state.params, state.model_state, eval_fn, split)
          for split in splits}


def eval_row(evals: dict, opt_state) -> dict:
  """The flat metrics row of one evaluation: '<split>_<metric>' and densities."""
  return {**{f'{sp}_{k}': v for sp, e in evals.items() for k, v in e.items()},
          **density_stats(opt_state)}


def density_stats(opt_state) -> dict:
  """Overall and per-layer density of the masks in `opt_state` (host values)."""
  masks = transform.stored_masks(opt_state)
  per_layer, active = jax.device_get(_mask_counts(masks))
  total = sum(math.prod(m.shape) for m in jax.tree.leaves(
      masks, is_leaf=lambda x: isinstance(x, transform.PackedMask)))
  return {'density': int(active) / total if total else 1.0, 'active': int(active),
          'prunable': total, 'layer_density': {k: float(v) for k, v in per_layer.items()}}


@jax.jit
def _mask_counts(masks):
  """Per-layer density and total active count in one program: a run reports
  them at every evaluation (op by op they cost about 3 ms a call)."""
  masks = transform.unpack_masks(masks)
  return masks_lib.layer_density(masks), masks_lib.total_active(masks)
