"""Evaluating a run from its checkpoints: `sparsejax eval`.

The caller rebuilds the run's Task (from its recorded config,
`experiment.task_of_run`); this restores a checkpoint into it and evaluates
each split as the training loop does, and optionally per example: one loss
and accuracy per test example, in the split's order, so that two runs on the
same test set can be compared pairwise (`programs.stats.paired_bootstrap`)
instead of by their means alone. `run` is the command: the evaluation
printed, the per-example arrays written to a file.
"""

from __future__ import annotations

import pathlib

import jax
import numpy as np

from sparsejax.core import schedules
from sparsejax.programs import summaries
from sparsejax.train import checkpoint as ckpt_lib, evaluation, loop, step as step_lib


def restore(task, workdir, step: int | None = None):
  """(run, state, step): `task` built for evaluation and the checkpoint at
  `step` (the latest if None) of `workdir` restored into its state."""
  if task.schedule.needs_start:   # a fine-tuning run: same state layout as Dense
    task = task.replace(schedule=schedules.Dense())
  run = loop.build(task.replace(distill=None))   # evaluation needs no teacher
  ckpts = ckpt_lib.Checkpoints(pathlib.Path(workdir) / 'checkpoints')
  try:
    step = ckpts.latest_step() if step is None else step
    if step is None:
      raise ckpt_lib.CheckpointError(f'{ckpts.steps_dir} holds no checkpoint')
    state, _ = ckpts.restore(step, ckpt_lib.abstract_like(run.abstract, run.state_sh))
  finally:
    ckpts.close()
  return run, state, step


def evaluate(task, workdir, splits=None, step: int | None = None,
             per_example: bool = False) -> dict:
  """{'step', 'eval': {split: means}, density stats, and with `per_example`
  'per_example': {split: {'loss', metrics...: arrays}}} of a run's checkpoint."""
  run, state, step = restore(task, workdir, step)
  splits = list(splits or run.task.loop.eval_splits)
  eval_fn = jax.jit(step_lib.make_eval_step(run.task))
  out = {'step': step,
         'eval': evaluation.evaluate_splits(run.task, run.mesh, state, eval_fn, splits),
         **evaluation.density_stats(state.opt_state)}
  if per_example:
    fn = jax.jit(run.task.eval_per_example)
    out['per_example'] = {split: evaluation.per_example(run.task, run.mesh, state.params,
                                                        state.model_state, fn, split)
                          for split in splits}
  return out


def save_per_example(path, per_example: dict) -> pathlib.Path:
  """Writes {split: {name: array}} as one .npz, keys '<split>_<name>'."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.savez(path, **{f'{split}_{k}': v for split, d in per_example.items() for k, v in d.items()})
  return path


def run(task, workdir, splits=None, step: int | None = None, per_example=None,
        log=print) -> dict:
  """`evaluate` of the run in `workdir` with its table logged, and with
  `per_example` (a .npz path) each example's loss and metrics written there
  (`save_per_example`); returns the evaluation."""
  workdir = pathlib.Path(workdir).absolute()
  summary = evaluate(task, workdir, splits, step, per_example=bool(per_example))
  log(f'step {summary["step"]} of {workdir}\n{summaries.results_table(summary)}')
  if per_example:
    path = save_per_example(per_example, summary['per_example'])
    log(f'per-example loss and metrics of {", ".join(summary["per_example"])} in {path}')
  return summary
