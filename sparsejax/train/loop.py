"""The training loop over a `Task`: a trained sparse model, metrics,
checkpoints and a summary out. Resumes from the workdir's latest checkpoint,
so re-running after a crash, a kill or Ctrl-C continues exactly where the last
checkpoint left off. The loop names no schedule: everything it needs from one
is the `Schedule` interface. What it runs is built first (`run_setup.build`:
`Start`, `Run` and the rest are importable from here too); its cadence is
the task's `loop` settings.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp

from sparsejax.core import protocol, transform
from sparsejax.train import checkpoint as ckpt_lib, compiled
from sparsejax.train import feed as feed_lib, flop_count
from sparsejax.train import metrics as metrics_lib, peak_memory
from sparsejax.train import step as step_lib
from sparsejax.train import teacher as teacher_lib
from sparsejax.train.mask_dynamics import MaskDynamics
from sparsejax.train.evaluation import density_stats, eval_row, evaluate_splits
from sparsejax.train.periodic import (EarlyStopping, Interrupted, NonFiniteError,  # noqa: F401
                                      catch_signals, check_record, lagged_rows)
from sparsejax.train.run_setup import (Run, Start, banner, build, describe,  # noqa: F401
                                       initial_state, mask_update_steps, update_program_steps)
from sparsejax.train.task import SetupError, Task

__all__ = ['Start', 'Run', 'Result', 'build', 'initial_state', 'train', 'Interrupted',
           'NonFiniteError', 'SetupError']


@dataclasses.dataclass
class Result:
  """What `train` produced: the final state (on the devices) and the summary."""
  state: step_lib.TrainState
  summary: dict
  workdir: pathlib.Path

  @property
  def masks(self):
    return transform.get_masks(self.state.opt_state)


def train(task: Task, workdir, *, start: Start | None = None, snapshots: tuple[int, ...] = (),
          record: dict | None = None, progress: bool = True, mesh=None,
          log: Callable[[str], None] | None = None) -> Result:
  """Trains (or resumes) `task` in `workdir`; returns the final state and summary.

  `start` replaces the fresh initialisation (used only when the workdir holds
  no checkpoint yet). `snapshots` are steps after which params and model state
  are also saved as named checkpoints 'step_K' ('init' is always saved).
  `record` (JSON) describes the run for `config.json`; a workdir refuses to
  resume a run whose record differs in keys that change results.
  """
  log = log or (lambda text: print(text, file=sys.stderr, flush=True))
  run = build(task, mesh, start)                 # every setup error before the workdir
  workdir = pathlib.Path(workdir).absolute()
  record = {**(record or {}), 'resolved': describe(run), 'warnings': run.warnings}
  check_record(workdir, record)
  workdir.mkdir(parents=True, exist_ok=True)
  check_record(workdir, record, write=True)
  if jax.process_index() == 0:
    log(banner(run, workdir))
    for text in run.warnings:
      log(f'warning: {text}')
  return _loop(run, workdir, snapshots, progress,
               hparams=metrics_lib.flat_hparams({k: v for k, v in record.items()
                                                 if k != 'warnings'}))


def _restore_or_init(run: Run, ckpts, snapshots):
  latest = ckpts.latest_step()
  if latest is None:
    state = initial_state(run)
    named = {'params': state.params, 'model_state': state.model_state}
    ckpts.save_named('init', named)
    if 0 in snapshots:
      ckpts.save_named('step_0', named)
    return state
  state, meta = ckpts.restore(latest, ckpt_lib.abstract_like(run.abstract, run.state_sh))
  if int(state.step) != latest or meta.get('data_position') != latest:
    raise ckpt_lib.CheckpointError(f'checkpoint {ckpts.steps_dir / str(latest)} is '
                                   f'inconsistent: step {int(state.step)}, meta {meta}')
  return state


def _make_feed(run: Run, start: int):
  t = run.task
  if feed_lib.wants_device(t.on_device, t.dataset.train):
    return feed_lib.DeviceFeed(t.dataset.train, t.batch_size, t.loop.seed, start, run.mesh)
  return feed_lib.HostFeed(t.dataset.train, t.batch_size, t.loop.seed, start, t.loop.prefetch,
                           run.mesh)


def _loop(run: Run, workdir: pathlib.Path, snapshots, progress, hparams=None) -> Result:
  t = run.task
  x_nd = 1 + len(t.dataset.input_shape)
  y_nd = x_nd if t.dataset.task == 'lm' else 1
  step_fn, train_fns, eval_fn, density_fn = compiled.programs(run, x_nd, y_nd)
  ckpts = ckpt_lib.Checkpoints(workdir / 'checkpoints', keep=t.loop.keep_checkpoints)
  state = _restore_or_init(run, ckpts, snapshots)
  start = int(state.step)
  writer = metrics_lib.MetricsWriter(workdir, t.loop.steps, start, progress=progress,
                                     writers=t.loop.writers, hparams=hparams)
  stopper = EarlyStopping(t.loop.early_stopping,
                          metrics_lib.read_rows(workdir / 'metrics.jsonl') if start else ())
  evaluate = lambda: evaluate_splits(t, run.mesh, state, eval_fn, t.loop.eval_splits)
  best = _restore_best(run, ckpts) if stopper.best is not None else None
  last_eval = {}
  if start == 0 and t.loop.eval_at_start:
    last_eval = evaluate()
    writer.write('eval', 0, eval_row(last_eval, state.opt_state))
  feed = _make_feed(run, start)
  # The teacher is an input of the step, constant over the run and not
  # checkpointed: a resumed run rebuilds it from its inputs (the record holds
  # its checksum).
  teacher = () if run.teacher is None else (teacher_lib.place(run),)
  all_program_steps = update_program_steps(run)
  program_steps = {s for s in all_program_steps if s >= start}
  flops = flop_count.Counter(run, all_program_steps, workdir, start)
  flops.begin(start, state)
  update_steps = {s for s in mask_update_steps(run) if s >= start}
  dynamics = None
  if update_steps:   # a resumed run's initial mask is a function of the seed
    dynamics = MaskDynamics(transform.get_masks(
        (state if start == 0 else initial_state(run)).opt_state))
  pending, t_window, n_window, warm = [], time.perf_counter(), 0, set()
  t_start = time.perf_counter()
  try:
    with catch_signals() as caught:
      for step in range(start, t.loop.steps if not stopper.should_stop else start):
        if step in update_steps:
          t_update = dynamics.before(state)
        program = step in program_steps
        state, m = train_fns[program](state, feed.next_batch(step), *teacher)
        pending.append(m)
        if program in warm:
          n_window += 1
        else:   # its first call compiled it: that is no step's time, so no rate's or ETA's
          warm.add(program)
          t_window, n_window = time.perf_counter(), 0
        done = step + 1
        if program:
          flops.record(done, state)
        if step in update_steps:
          writer.write('mask_update', done, dynamics.after(state, t_update))
        log_now = done % t.loop.log_every == 0 or done == t.loop.steps
        eval_now = done % t.loop.eval_every == 0 or done == t.loop.steps
        save_now = done % t.loop.checkpoint_every == 0 or done == t.loop.steps
        if done in snapshots:
          ckpts.save_named(f'step_{done}', {'params': state.params,
                                            'model_state': state.model_state})
        stop = bool(caught)   # read once: a signal may arrive at any point below
        boundary = log_now or eval_now or save_now or stop
        fetched = lagged_rows(pending, step_fn.names, done, boundary, ckpts)
        if fetched is None:
          continue
        first, names, rows, pending = fetched
        writer.write_steps('train', first, names, rows[:-1] if log_now else rows)
        if not boundary:
          continue
        if log_now:
          r = dict(zip(names, rows[-1].tolist()))
          lr_fn = t.loop.learning_rate
          lr_step = protocol.lr_step(run.schedule, (done - 1) // t.accumulate)
          if n_window:   # before the density program, whose first call compiles it
            r['steps_per_sec'] = n_window / max(time.perf_counter() - t_window, 1e-9)
          r['density'] = float(jax.device_get(density_fn(state.opt_state)))
          if lr_fn is not None:
            r['learning_rate'] = float(lr_fn(lr_step))
          writer.write('train', done, r)
          writer.progress(done, loss=r['loss'], **({'acc': r['accuracy']} if 'accuracy' in r
                                                   else {}),
                          density=r['density'], steps_per_sec=r.get('steps_per_sec'),
                          **{f'{k}_acc': v['accuracy'] for k, v in last_eval.items()
                             if 'accuracy' in v})
        if eval_now:
          last_eval = evaluate()
          writer.write('eval', done, eval_row(last_eval, state.opt_state))
          if 'validation' in last_eval:
            if stopper.update(done, last_eval['validation']['loss']):
              best = _copy_weights(state)
              ckpts.save_named('best', best)
            save_now = save_now or stopper.should_stop
        flops.write(writer)
        writer.flush()
        if save_now or stop:
          ckpts.save(done, state, {'step': done, 'data_position': feed.position}, wait=stop)
        if stop:
          raise Interrupted(caught[0], done, ckpts.steps_dir)
        if stopper.should_stop:
          break
        if log_now:    # the window's clock restarts after evaluation and saving
          t_window, n_window = time.perf_counter(), 0
      # A signal after the last step's check waits for the final save to be
      # whole, then stops the run as one during training does.
      ckpts.wait()
    if caught:
      raise Interrupted(caught[0], int(state.step), ckpts.steps_dir)
    if not last_eval:      # the run had already finished: evaluate what is there
      last_eval = evaluate()
    best_eval = None
    if best is not None:   # the best-validation weights, on every split
      best_eval = evaluate_splits(t, run.mesh, step_lib.TrainState(
          state.step, best['params'], best['model_state'], state.opt_state, state.rng),
          eval_fn, t.loop.eval_splits)
  finally:
    feed.close()
    writer.close()
    ckpts.close()
  stats = density_stats(state.opt_state)
  summary = {'steps': t.loop.steps, 'workdir': str(workdir), 'eval': last_eval,
             **stats, 'schedule': run.schedule.describe(),
             'warnings': run.warnings,
             'train_seconds_this_process': time.perf_counter() - t_start,
             'resumed_from': start or None, 'final_step': int(state.step),
             'stopped_early': stopper.should_stop,
             'flops': flops.summary(int(state.step), stats['layer_density']),
             'memory': {'peak_rss_mib': peak_memory.host_peak_mib(),   # the process so far
                        'peak_device_bytes': peak_memory.device_peak_bytes()},
             'best_validation': ({'step': stopper.best_step, 'loss': stopper.best,
                                  'eval': best_eval}
                                 if stopper.best is not None else None)}
  metrics_lib.write_json(workdir / 'summary.json', summary)
  return Result(state, summary, workdir)


def _copy_weights(state) -> dict:
  """A copy of the params and model state that outlives the donated state."""
  return jax.tree.map(jnp.copy, {'params': state.params, 'model_state': state.model_state})


def _restore_best(run: Run, ckpts) -> dict | None:
  """The best-validation weights of a resumed run (its named checkpoint)."""
  if not ckpts.has_named('best'):
    return None
  abstract = {'params': run.abstract.params, 'model_state': run.abstract.model_state}
  shardings = {'params': run.state_sh.params, 'model_state': run.state_sh.model_state}
  return ckpts.restore_named('best', ckpt_lib.abstract_like(abstract, shardings))
