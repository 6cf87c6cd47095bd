"""Post-training pruning of a Task's model: the `sparsejax prune` program.

`start_weights` loads the trained weights to prune (a run, checkpoint,
.npz / .safetensors, or 'minilm'); `prune` prunes them layer by layer with
calibration batches from the train split (`sparsejax.posttrain`: magnitude,
Wanda, SparseGPT, unstructured or N:M, OWL's per-block sparsities),
evaluates the dense and pruned weights, and writes `workdir/state` (params
and masks: what `finetune.init_from=workdir` with `pruning.schedule='fixed'`
loads, and `load_pruned` reads) and `workdir/prune.json` (the caller's
record and the report). `sparsejax.prune_run` is its config side.
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

from sparsejax import models, posttrain
from sparsejax.core import tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.models.bert import PAD_ID
from sparsejax.train import checkpoint as ckpt_lib, evaluation, loop
from sparsejax.train import task as task_lib, weights as weights_lib
from sparsejax.train.task import SetupError


def start_weights(source: str, run: loop.Run, seed: int = 0) -> tuple[Any, Any]:
  """(params, model_state) to prune: `source` loaded into `run`'s state
  (its abstract TrainState); 'minilm' is the pretrained MiniLM with a new
  head of the task's classes, drawn from `seed`."""
  if source == 'minilm':
    from sparsejax.models import safetensors_io
    params, _, _ = safetensors_io.load_minilm(num_classes=run.task.dataset.num_classes,
                                              seed=seed)
    tree_lib.check_same_structure(params, run.abstract.params, 'the MiniLM weights')
    return params, {}
  return weights_lib.load_weights(source, run.abstract.params, run.abstract.model_state)


def calibration_batches(task: task_lib.Task, calibration: int) -> list:
  """The first `calibration` training examples (in the run's shuffled order
  for its seed), in batches of at most `task.batch_size`."""
  train = task.dataset.train
  if not 0 < calibration <= len(train):
    raise SetupError(f'calibration={calibration} examples: the train split has {len(train)}')
  size = min(task.batch_size, calibration)
  return [train.get(data_base.batch_indices(len(train), size, task.loop.seed, i)[
      :calibration - i * size])[0] for i in range(-(-calibration // size))]


def prune(task: task_lib.Task, mesh, params, model_state, batches, workdir, *,
          method: str, sparsity: float | None = None, nm=None, source: str = '',
          options: dict | None = None, owl=None, evaluate: bool = True,
          record: Mapping | None = None, log: Callable[[str], None] = print) -> dict:
  """Prunes `params` of `task.model` with `method` (`posttrain.prune_model`:
  to `sparsity` or an `nm` pattern, over the prunable leaves of `task.rule`)
  on the calibration `batches` (`calibration_batches`); `options` are the
  method's (SparseGPT: percdamp, blocksize, per_row) and `owl` a
  `posttrain.OWL`. With `evaluate`, the dense and pruned weights on
  `task.loop.eval_splits` (on `mesh`) go into the report's 'eval'. Writes
  workdir/state and workdir/prune.json (`record`'s keys, then 'report');
  returns the report, 'from' being `source`."""
  valid = (lambda x: x != PAD_ID) if isinstance(task.model, models.BertEncoder) else None
  start = time.perf_counter()
  pruned, masks, report = posttrain.prune_model(
      task.model, params, batches, method, sparsity=sparsity, nm=nm,
      model_state=model_state or None, rule=task.rule, valid_tokens=valid, options=options,
      owl=owl, apply_kwargs=task_lib.train_kwarg(task.model, False), log=log)
  report['from'] = str(source)
  report['wall_seconds'] = time.perf_counter() - start
  if evaluate:
    eval_fn = jax.jit(task.eval_sums)
    report['eval'] = {
        name: {split: evaluation.evaluate(task, mesh, p, model_state or {}, eval_fn, split)
               for split in task.loop.eval_splits}
        for name, p in (('dense', params), ('pruned', pruned))}
    if task.dataset.task == 'lm':   # mean NLL per predicted token: exp is the perplexity
      for evals in report['eval'].values():
        for e in evals.values():
          e['perplexity'] = math.exp(e['loss'])
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  tree = {'params': jax.device_get(pruned), 'masks': jax.device_get(masks)}
  if model_state:
    tree['model_state'] = jax.device_get(model_state)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(workdir / 'state', tree, force=True)
    ckptr.wait_until_finished()
  (workdir / 'prune.json').write_text(json.dumps(
      {**(record or {}), 'report': report}, indent=1,
      default=lambda x: np.asarray(x).tolist()) + '\n')
  return report


def load_pruned(workdir) -> tuple[Any, Any]:
  """(params, masks) that `prune` wrote, as numpy; `FixedMask(masks=masks)`
  fine-tunes with exactly that mask."""
  tree = ckpt_lib.restore_raw(pathlib.Path(workdir) / 'state')
  return tree['params'], tree['masks']


def is_workdir(path) -> bool:
  """Whether `path` is a `prune` workdir (prune.json and its state)."""
  path = pathlib.Path(path)
  return (path / 'prune.json').is_file() and (path / 'state').is_dir()
