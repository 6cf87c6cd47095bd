"""Fine-tuning trained models: prune then recover, from the command line or
from Python.

`sparsejax finetune --config FILE --workdir DIR` loads `finetune.init_from`
(a sparsejax run or checkpoint, or weights in a .npz or .safetensors file
whose keys are leaf paths), then, with `finetune.method='masked'`:

- pruning.schedule 'oneshot': prunes once before training (any criterion,
  allocation and pattern, 2:4 included), evaluates the pruned model at step 0
  and fine-tunes with the mask fixed: the recovery of Han et al. 2015 and
  the ShrinkBench protocol (Blalock et al. 2020);
- any other schedule ('gradual', 'rigl', ...): starts from the loaded
  weights and prunes as it trains (gradual magnitude pruning during
  fine-tuning).

The other methods train a small part of the model instead (`peft`). The
recovery recipe is ordinary config: optimizer.name 'adamw' or 'sgd', a
reduced learning rate, warmup, 'cosine' or 'plateau' schedules, weight decay
(which never revives pruned weights: `sparsify` projects every update), and
early stopping on validation loss (train.early_stopping).
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable, Iterable

import jax
import numpy as np
import optax

from sparsejax import config as config_lib
from sparsejax.core import allocation as alloc_lib
from sparsejax.core import masks as masks_lib, prune as prune_lib, select
from sparsejax.core import schedules, transform, tree as tree_lib
from sparsejax.programs import results as results_lib
from sparsejax.train import checkpoint as ckpt_lib, loop

PyTree = Any


def load_weights(path, abstract_params: PyTree, abstract_model_state: PyTree | None = None
                 ) -> tuple[PyTree, PyTree]:
  """(params, model_state) from a run, a checkpoint or a weights file, checked
  against the model's structure; errors name the offending leaf or key."""
  path = pathlib.Path(path).expanduser()
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'finetune.init_from: {path} does not exist')
  if path.is_dir():
    state = ckpt_lib.restore_raw(_step_dir(path))
    params, model_state = state['params'], state.get('model_state') or {}
  elif path.suffix in ('.npz', '.safetensors'):
    flat = _read_flat(path)
    params = _unflatten(flat, abstract_params, str(path), prefix='params/')
    model_state = {}
    if abstract_model_state:
      model_state = _unflatten(flat, abstract_model_state, str(path), prefix='model_state/')
  else:
    raise ckpt_lib.CheckpointError(f'finetune.init_from: {path} is neither a sparsejax run '
                                   'directory nor a .npz / .safetensors file')
  try:
    tree_lib.check_same_structure(params, abstract_params, f'the weights in {path}')
  except ValueError as e:
    raise ckpt_lib.CheckpointError(str(e)) from None
  return params, model_state


def _step_dir(path: pathlib.Path) -> pathlib.Path:
  from sparsejax.train import inspection
  return inspection.resolve(path)


def _read_flat(path: pathlib.Path) -> dict[str, np.ndarray]:
  if path.suffix == '.npz':
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  from safetensors.numpy import load_file
  return load_file(str(path))


def _unflatten(flat: dict, abstract: PyTree, source: str, prefix: str) -> PyTree:
  """Leaves keyed by leaf path ('hidden_0/kernel', with or without `prefix`,
  '/' or '.' separators) -> a tree shaped like `abstract`."""
  norm = {}
  for k, v in flat.items():
    key = k[len(prefix):] if k.startswith(prefix) else k
    norm[key.replace('.', '/')] = v
  wanted = [p for p, _ in tree_lib.leaves_with_paths(abstract)]
  missing = [p for p in wanted if p not in norm]
  if missing:
    raise ckpt_lib.CheckpointError(f'{source} has no key {missing[0]!r}'
                                   + (f' (and {len(missing) - 1} more)' if len(missing) > 1
                                      else '') + f'; its keys: {sorted(flat)[:8]}...')
  extra = sorted(set(norm) - set(wanted))
  if extra and prefix == 'params/':
    raise ckpt_lib.CheckpointError(f'{source} has a key {extra[0]!r} that the model does '
                                   'not have')
  return tree_lib.map_with_path(lambda p, x: np.asarray(norm[p]), abstract)


def prune_loaded(params, p: config_lib.PruningSettings, key=None):
  """One-shot pruning of loaded weights with the config's pruning settings."""
  allocation = alloc_lib.Allocation(p.allocation, overrides=p.overrides, scales=p.scales,
                                    erk_power_scale=p.erk_power_scale)
  pattern = select.make_pattern(p.pattern, **p.pattern_options)
  rule = tree_lib.PrunableRule(include=p.include, exclude=p.exclude, min_ndim=p.min_ndim)
  return prune_lib.prune(params, p.sparsity, p.criterion, allocation=allocation,
                         pattern=pattern, rule=rule, key=key)


def run_finetune(config, workdir, *, progress: bool = False) -> dict:
  """Loads, (prunes,) fine-tunes; returns the result row of the run."""
  settings = config_lib.to_settings(config)
  f = settings.finetune
  if not f.init_from:
    raise config_lib.ConfigError("config key 'finetune.init_from' must name trained weights")
  if f.method != 'masked':
    from sparsejax.programs import peft
    return peft.run_peft(config, workdir, progress=progress)
  base = config_lib.apply_overrides(config, {'pruning.schedule': 'dense', 'sparsity': 0.0})
  run = loop.build(config_lib.to_settings(base))
  params, model_state = load_weights(f.init_from, run.abstract.params,
                                     run.abstract.model_state)
  p = settings.pruning
  if p.schedule == 'oneshot':
    key = jax.random.fold_in(jax.random.key(settings.seed), 7)
    pruned, masks = prune_loaded(params, p, key)
    run_config = config_lib.apply_overrides(
        config, {'pruning.schedule': 'fixed', 'train.eval_at_start': True})
    start = loop.Start(jax.device_get(pruned), jax.device_get(masks), model_state or None)
  else:
    run_config = config_lib.apply_overrides(config, {'train.eval_at_start': True})
    start = loop.Start(params, None, model_state or None)
  loop.train_and_evaluate(run_config, workdir, progress=progress, start=start)
  row = results_lib.run_row(workdir, seed=settings.seed, arm='masked')
  at_start = [m for s, m in row['curve'] if s == 0]
  row['after_pruning'] = at_start[0] if at_start else None
  return row


def fine_tune(params: PyTree, masks: PyTree, loss_fn: Callable, batches: Iterable,
              optimizer: optax.GradientTransformation | None = None,
              steps: int | None = None) -> PyTree:
  """Sparse fine-tuning in plain Python: trains `params` with `masks` fixed.

  `loss_fn(params, batch) -> scalar`; `batches` yields batches (stops after
  `steps` if given). Returns the params; pruned weights are exactly zero.
  """
  tx = transform.sparsify(optimizer or optax.adamw(1e-3, weight_decay=1e-4),
                          schedules.FixedMask(masks=masks))
  state = tx.init(params)
  params = masks_lib.apply_masks(params, transform.get_masks(state))

  @jax.jit
  def step(params, state, batch):
    grads = jax.grad(loss_fn)(params, batch)
    updates, state = tx.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  for i, batch in enumerate(batches):
    if steps is not None and i >= steps:
      break
    params, state = step(params, state, batch)
  return params
