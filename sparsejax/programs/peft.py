"""Parameter-efficient fine-tuning: row-based sparse fine-tuning against LoRA,
unstructured sparse fine-tuning and full fine-tuning, at matched budgets.

Row-based sparse fine-tuning (Li & Bhaskara 2025, arXiv 2502.11439): score
every output neuron (a row of the PyTorch-layout weight, a column of a Flax
kernel; for a conv kernel an output channel) of each target with a
structural-pruning importance (L2 norm, first-order Taylor |w*g| summed over
the row, the group Taylor importance (sum of w*g over the row and its
bias)^2 per batch of Molchanov et al. 2019 ('structural'), activation-aware
|W|*||X||, or random as the control), keep the top r, and train only a delta
of shape (r, d_in) (a conv: (r, kh, kw, c_in)) per kernel, added at those
rows to the frozen weights. The delta
starts at zero, so step 0 is the pretrained model; gradients and optimizer
state exist only for the deltas; at the end they merge into plain weights.

Baselines on the same matrices: LoRA (Hu et al. 2022; W + (alpha/r) A B, B
zero-initialised), unstructured sparse fine-tuning of K individual weights
chosen by the magnitude of change after a short dense phase (LT-SFT, Ansell
et al. 2022) or by gradient magnitude, trained as a K-vector of deltas
scattered at their flat indices (so its gradient and Adam state are K-sized
too, plus K int32 indices that the row method does not need), and full
fine-tuning.
Params matching `FinetuneSettings.head` (a new task head) are trained in full and
freshly initialised by every method.

Memory and time, measured (`row['peft']`): the process's peak RSS
('peak_rss_mb', loading and scoring included); the peak RSS of training
('peak_rss_train_mb', `peak_memory.Phase`): from the first logged training
row on ('peak_rss_train_settled'; the compiled steps, evaluations and
checkpoints after it), or from the start of the loop when the run logged no
row; the accelerator allocator's peak where there is one
('peak_device_bytes', the whole process); and 'ms_per_step' (median of the
logged rates, the compiling window left out). The 'bytes_*' figures are
counted from shapes.

Every method is the ordinary training stack with a reparametrised model
whose `params` are only the trainable tree; the frozen weights ride along as
the 'frozen' variable collection (never differentiated, never in the
optimizer). `run_peft(task, settings, workdir)` takes the task to fine-tune
(its dataset, model, optimizer and loop settings) and the method's
`FinetuneSettings`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import re
import resource
import statistics
from typing import Any

import jax

from sparsejax.core import schedules, tree as tree_lib
from sparsejax.programs import results as results_lib
from sparsejax.train import peak_memory
from sparsejax.train import loop, metrics as metrics_lib, weights as weights_lib
from sparsejax.train.task import SetupError, Task

PyTree = Any


from sparsejax.programs.peft_methods import (FINETUNE_METHODS, NOTHING_PRUNABLE,  # noqa: F401
                                             ROW_SCORES, FinetuneSettings, Method,
                                             Reparametrized, add_rows, choose_rows, fan_in,
                                             memory_bytes, row_scores, structural_importance,
                                             target_paths, trainable_count, tree_bytes)


# --- the program --------------------------------------------------------------------------

def run_peft(task: Task, f: FinetuneSettings, workdir, *, progress: bool = False,
             record: dict | None = None) -> dict:
  """Loads `f.init_from` into `task`'s model, builds the method `f.method`,
  trains it with the task's data, optimizer and loop settings, and returns
  the result row with its budget and memory figures (`row['peft']`); writes
  the merged weights (`merged.npz`) and the method (`peft.json`)."""
  from sparsejax.programs import peft_select   # scores that need data and gradients
  if f.method not in FINETUNE_METHODS or f.method == 'masked':
    raise SetupError(f'finetune.method {f.method!r} is not a parameter-efficient method; '
                     f'choose from {list(FINETUNE_METHODS[1:])}')
  if not isinstance(task.schedule, schedules.Dense):
    raise SetupError(f'finetune.method {f.method!r} trains a part of the model and keeps '
                     f'no masks; the task asks for {type(task.schedule).__name__}')
  base_run = loop.build(task)
  fresh = jax.device_get(loop.initial_state(base_run).params)
  params, model_state = peft_select.load_pretrained(f, base_run, fresh)
  del fresh     # a whole random model, needed only for a new head's leaves
  head = tuple(p for p, _ in tree_lib.leaves_with_paths(params)
               if f.head and re.search(f.head, p))
  targets = tuple(p for p in target_paths(params, f.targets) if p not in head)
  method = peft_select.build_method(f, workdir, base_run, params, model_state, targets, head,
                                    record=record)
  key = jax.random.fold_in(jax.random.key(task.loop.seed), 11)
  trainable0 = jax.device_get(method.init_trainable(params, key))
  frozen = {} if method.kind == 'full' else {'frozen': params}
  start = loop.Start(trainable0, {**frozen, **(model_state or {})})
  peft_task = task.replace(model=Reparametrized(task.model, method), rule=NOTHING_PRUNABLE,
                           loop=task.loop.replace(eval_at_start=True))
  # the peak of training: loading, choosing rows and compiling left out
  with peak_memory.Phase(peak_memory.after_rows(pathlib.Path(workdir) / 'metrics.jsonl')
                         ) as phase:
    result = loop.train(peft_task, workdir, start=start, record=record, progress=progress)
  final = _state_dict(result.state)
  rows = metrics_lib.read_rows(pathlib.Path(workdir) / 'metrics.jsonl')
  rates = [r['steps_per_sec'] for r in rows if 'steps_per_sec' in r][1:]
  info = {'method': f.method, 'trainable_params': trainable_count(trainable0),
          'total_params': trainable_count(params),
          **memory_bytes(method, params, trainable0, final['opt_state']),
          'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          'peak_rss_train_mb': phase.host_mib, 'peak_rss_train_reset': phase.reset,
          'peak_rss_train_settled': phase.settled,
          'peak_device_bytes': peak_memory.device_peak_bytes(),
          'ms_per_step': 1000 / statistics.median(rates) if rates else None,
          'targets': len(targets), 'rows': [len(r) for r in method.rows] or None}
  row = results_lib.run_row(workdir, seed=task.loop.seed, arm=f.method)
  row['peft'] = info
  save_merged(workdir, method, final)
  return row


def save_merged(workdir, method: Method, state=None) -> pathlib.Path:
  """Writes the fine-tuned model as ordinary weights, `merged.npz` (keys are
  leaf paths, loadable by finetune.init_from), and the method as `peft.json`;
  `state` is the run's final state, a TrainState or a dict with 'params' and
  'model_state' (read from its checkpoint when None)."""
  workdir = pathlib.Path(workdir)
  state = _state_dict(state) if state is not None else _final_state(workdir)
  frozen = state['model_state'].get('frozen') if method.kind != 'full' else None
  merged = method.merged_params(frozen, state['params'])
  rest = {k: v for k, v in (state.get('model_state') or {}).items() if k != 'frozen'}
  path = weights_lib.write_npz(workdir / 'merged.npz', merged, rest)
  (workdir / 'peft.json').write_text(json.dumps(dataclasses.asdict(method)) + '\n')
  return path


def _state_dict(state) -> dict:
  """A TrainState (on the devices) or a restored checkpoint dict, as numpy dicts."""
  if isinstance(state, dict):
    return state
  return {'params': jax.device_get(state.params),
          'model_state': jax.device_get(state.model_state) or {},
          'opt_state': state.opt_state}   # only its shapes are read


def _final_state(workdir):
  """The run's latest checkpoint as numpy arrays."""
  from sparsejax.train import checkpoint as ckpt_lib, inspection
  return ckpt_lib.restore_raw(inspection.resolve(workdir))
