"""train_and_evaluate: a config and a workdir in; a trained sparse model,
metrics, checkpoints and a summary out. Resumes from the workdir's latest
checkpoint, so re-running the same command after a crash, a kill or Ctrl-C
continues exactly where the last checkpoint left off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sparsejax import config as config_lib
from sparsejax import data as data_lib
from sparsejax.core import schedules, transform
from sparsejax.core import tree as tree_lib
from sparsejax.data import base as data_base
from sparsejax.train import builders, checkpoint as ckpt_lib, feed as feed_lib
from sparsejax.train.evaluation import (density_stats, density_stats_device, eval_row,
                                       evaluate_splits)
from sparsejax.train import metrics as metrics_lib
from sparsejax.train import sharding as sharding_lib, step as step_lib

# Metrics are fetched LAG steps behind the newest step, so the devices still
# have LAG steps queued while the host writes rows; never more than 2 * LAG
# steps are in flight (fake CPU meshes deadlock past about 30; see DESIGN.md).
LAG = 8
# Keys that change what is logged or saved, not what is trained: a resumed run
# may change them.
NO_EFFECT_KEYS = ('train.log_every', 'train.eval_every', 'train.checkpoint_every',
                  'train.keep_checkpoints', 'train.eval_splits', 'data.prefetch',
                  'data.eval_batch_size')


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or Inf."""


class Interrupted(RuntimeError):
  """SIGINT or SIGTERM arrived; a checkpoint was saved."""

  def __init__(self, signum: int, step: int, workdir):
    self.signum = signum
    super().__init__(f'{signal.Signals(signum).name} at step {step}: checkpoint saved in '
                     f'{workdir}; run the same command again to resume')


@dataclasses.dataclass(frozen=True)
class Start:
  """Where a run starts instead of a fresh initialisation: given params (and
  model state), and optionally a fixed mask (then pruning.schedule must be
  'fixed'). Programs use it: IMP levels, their controls, fine-tuning."""
  params: Any
  masks: Any = None
  model_state: Any = None


@dataclasses.dataclass
class Run:
  """Everything built from the settings, before any training."""
  settings: config_lib.Settings
  dataset: data_base.Dataset
  model: Any
  mesh: Any
  tx: Any
  lr_fn: Any
  init_state: Any          # key -> TrainState (pure)
  abstract: Any            # TrainState of ShapeDtypeStructs
  state_sh: Any            # TrainState of shardings
  start: Start | None = None


def build(settings: config_lib.Settings, mesh=None, start: Start | None = None,
          wrap_model=None) -> Run:
  """Everything a run needs, from typed settings. `wrap_model(model)` may
  replace the model by a reparametrisation of it (parameter-efficient
  fine-tuning)."""
  s = settings
  try:
    dataset = data_lib.load_dataset(s.data.name, **s.data.options)
  except TypeError as e:
    raise config_lib.ConfigError(f'data settings: {e}') from None
  mesh = mesh or sharding_lib.make_mesh(s.mesh.shape)
  sharding_lib.check_batch(mesh, s.data.batch_size)
  sharding_lib.check_batch(mesh, s.data.eval_batch_size, 'data.eval_batch_size')
  max_len = dataset.input_shape[0] if dataset.task == 'lm' else None
  model = builders.build_model(s.model, dataset.num_classes, dataset.task, max_len)
  if wrap_model is not None:
    model = wrap_model(model)
  imp = s.pruning.schedule == 'imp'
  # IMP restarts the learning-rate schedule every round: it spans one round.
  round_steps = s.pruning.schedule_options['every'] if imp else s.train.steps
  inner, lr_fn = builders.build_optimizer(s.optimizer, round_steps)
  if imp:
    last_round = s.pruning.schedule_options['rounds'] * round_steps
    base_lr = lr_fn
    lr_fn = lambda step: base_lr(step - min(step // round_steps * round_steps, last_round))

  x0, y0 = dataset.train.get(data_base.batch_indices(len(dataset.train), s.data.batch_size,
                                                     s.seed, 0))

  def loss_fn(params, batch):
    out = model.apply({'params': params}, batch[0], train=False)
    return step_lib.cross_entropy(out, batch[1])[0] / batch[1].size

  def apply_fn(params, x):
    return model.apply({'params': params}, x, train=False)

  if start is not None and start.masks is not None:
    if s.pruning.schedule != 'fixed':
      raise config_lib.ConfigError("a run started with a given mask needs pruning.schedule "
                                   f"'fixed', not {s.pruning.schedule!r}")
    schedule = schedules.FixedMask(masks=start.masks)
  else:
    schedule = builders.build_schedule(
        s.pruning, s.seed, loss_fn=loss_fn, batch=(jnp.asarray(x0), jnp.asarray(y0)),
        apply_fn=apply_fn, input_shape=(1, *dataset.input_shape))
  tx = transform.sparsify(inner, schedule, builders.prunable_rule(s.pruning))

  def init_state(key, start_params=None, start_model_state=None):
    from sparsejax import models
    init_key, run_key = jax.random.split(key)
    variables = dict(models.init_variables(model, init_key, dataset.input_shape,
                                           dataset.input_dtype))
    params = variables.pop('params')
    if start_params is not None:
      params = jax.tree.map(lambda a, b: jnp.asarray(a, b.dtype), start_params, params)
      if start_model_state is not None:
        variables = dict(start_model_state)
    opt_state = tx.init(params)
    params = transform.masked_params(params, opt_state)
    return step_lib.TrainState(jnp.zeros([], jnp.int32), params, variables, opt_state,
                               jax.random.key_data(run_key))

  abstract = jax.eval_shape(init_state, jax.random.key(s.seed))
  if start is not None:
    try:
      tree_lib.check_same_structure(start.params, abstract.params, 'the starting params')
      if start.model_state is not None:
        tree_lib.check_same_structure(start.model_state, abstract.model_state,
                                      'the starting model state')
    except ValueError as e:
      raise ckpt_lib.CheckpointError(str(e)) from None
  param_sh = sharding_lib.param_shardings(mesh, abstract.params, s.mesh.rules)
  state_sh = sharding_lib.state_shardings(mesh, abstract, abstract.params, param_sh)
  return Run(s, dataset, model, mesh, tx, lr_fn, init_state, abstract, state_sh, start)


def initial_state(run: Run):
  """The run's state at step 0, placed with its shardings."""
  key = jax.random.key(run.settings.seed)
  init = jax.jit(run.init_state, out_shardings=run.state_sh)
  if run.start is None:
    return init(key)
  return init(key, run.start.params, run.start.model_state)


def _check_workdir_config(workdir: pathlib.Path, config, write: bool = False) -> None:
  """A workdir belongs to one config: resuming with other settings is an error.
  With `write`, records the config (once the run could be built)."""
  path = workdir / 'config.json'
  text = config_lib.to_json(config)
  if path.exists():
    old, new = _flat(json.loads(path.read_text())), _flat(json.loads(text))
    changed = sorted(k for k in set(old) | set(new)
                     if old.get(k) != new.get(k) and k not in NO_EFFECT_KEYS)
    if changed:
      raise config_lib.ConfigError(
          f'{workdir} holds a run of a different config (keys that differ: {changed}); '
          'use a new workdir or the same config')
  if write and jax.process_index() == 0:
    path.write_text(text + '\n')


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v:
      out.update(_flat(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


class EarlyStopping:
  """Stops after `patience` evaluations without a lower validation loss.

  Rebuilt from the metrics rows written so far, so a resumed run decides
  exactly as an uninterrupted one would.
  """

  def __init__(self, patience: int, rows=()):
    self.patience, self.best, self.best_step, self.waited = patience, None, None, 0
    for r in rows:
      if r.get('kind') == 'eval' and 'validation_loss' in r:
        self.update(r['step'], r['validation_loss'])

  def update(self, step: int, loss: float) -> bool:
    """Records an evaluation; True when it is the best so far."""
    if self.best is None or loss < self.best:
      self.best, self.best_step, self.waited = loss, step, 0
      return True
    self.waited += 1
    return False

  @property
  def should_stop(self) -> bool:
    return self.patience > 0 and self.waited >= self.patience


@contextlib.contextmanager
def _catch_signals():
  """Records SIGINT/SIGTERM instead of dying, so the loop can save first."""
  caught = []
  handler = lambda signum, frame: caught.append(signum)
  old = {}
  for sig in (signal.SIGINT, signal.SIGTERM):
    try:
      old[sig] = signal.signal(sig, handler)
    except ValueError:      # not the main thread: leave signals alone
      pass
  try:
    yield caught
  finally:
    for sig, h in old.items():
      signal.signal(sig, h)


def train_and_evaluate(config, workdir, *, progress: bool = True, mesh=None,
                       start: Start | None = None, snapshots: tuple[int, ...] = (),
                       wrap_model=None) -> dict:
  """Trains (or resumes) the run in `workdir`; returns the summary.

  `start` replaces the fresh initialisation (used only when the workdir holds
  no checkpoint yet). `snapshots` are steps after which the params and model
  state are also saved as named checkpoints 'step_K' (IMP's rewind points;
  'init' is always saved).
  """
  settings = config_lib.to_settings(config)
  workdir = pathlib.Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  _check_workdir_config(workdir, config)
  run = build(settings, mesh, start, wrap_model)
  _check_workdir_config(workdir, config, write=True)
  s, t = settings, settings.train
  x_nd = 1 + len(run.dataset.input_shape)
  y_nd = x_nd if run.dataset.task == 'lm' else 1
  eval_fn = step_lib.compile_eval_step(step_lib.make_eval_step(run.model.apply), run.mesh,
                                       run.state_sh, x_nd, y_nd)
  ckpts = ckpt_lib.Checkpoints(workdir / 'checkpoints', keep=t.keep_checkpoints)
  latest = ckpts.latest_step()
  if latest is None:
    state = initial_state(run)
    ckpts.save_named('init', {'params': state.params, 'model_state': state.model_state})
    if 0 in snapshots:
      ckpts.save_named('step_0', {'params': state.params, 'model_state': state.model_state})
  else:
    state, meta = ckpts.restore(latest, ckpt_lib.abstract_like(run.abstract, run.state_sh))
    if int(state.step) != latest or meta.get('data_position') != latest:
      raise ckpt_lib.CheckpointError(f'checkpoint {ckpts.steps_dir / str(latest)} is '
                                     f'inconsistent: step {int(state.step)}, meta {meta}')
  start = int(state.step)
  writer = metrics_lib.MetricsWriter(workdir, t.steps, start, progress=progress)
  if t.early_stopping and 'validation' not in t.eval_splits:
    raise config_lib.ConfigError("config key 'train.early_stopping' needs 'validation' in "
                                 'train.eval_splits')
  stopper = EarlyStopping(t.early_stopping,
                          metrics_lib.read_rows(workdir / 'metrics.jsonl') if start else ())
  last_eval = {}
  if start == 0 and t.eval_at_start:
    last_eval = evaluate_splits(run, state, eval_fn, t.eval_splits)
    writer.write('eval', 0, eval_row(last_eval, state.opt_state))
  if feed_lib.wants_device(s.data.on_device, run.dataset.train):
    feed = feed_lib.DeviceFeed(run.dataset.train, s.data.batch_size, s.seed, start, run.mesh)
  else:
    feed = feed_lib.HostFeed(run.dataset.train, s.data.batch_size, s.seed, start,
                             s.data.prefetch, run.mesh)
  train_fn = step_lib.compile_train_step(step_lib.make_train_step(run.model.apply, run.tx),
                                        run.mesh, run.state_sh, x_nd, y_nd)
  settings_hash = config_lib.settings_hash(config)
  density_fn = jax.jit(density_stats_device)
  pending, t_window, n_window = [], time.perf_counter(), 0
  t_start = time.perf_counter()
  try:
    with _catch_signals() as caught:
      for step in range(start, t.steps if not stopper.should_stop else start):
        state, m = train_fn(state, feed.next_batch(step))
        pending.append(m)
        n_window += 1
        done = step + 1
        log_now = done % t.log_every == 0 or done == t.steps
        eval_now = done % t.eval_every == 0 or done == t.steps
        save_now = done % t.checkpoint_every == 0 or done == t.steps
        if done in snapshots:
          ckpts.save_named(f'step_{done}', {'params': state.params,
                                            'model_state': state.model_state})
        stop = bool(caught)   # read once: a signal may arrive at any point below
        boundary = log_now or eval_now or save_now or stop
        if not boundary and len(pending) < 2 * LAG:
          continue
        fetch = len(pending) if boundary else LAG
        first = done - len(pending) + 1
        rows = np.stack(jax.device_get(pending[:fetch])).astype(np.float64)
        pending = pending[fetch:]
        finite = rows[:, step_lib.METRICS.index('finite')]
        if not finite.all():
          bad = int(np.argmin(finite))
          last = ckpts.latest_step()
          where = (f'The last good checkpoint is step {last} in {ckpts.steps_dir}'
                   if last is not None else 'No checkpoint had been saved yet')
          raise NonFiniteError(
              f'the loss or gradients became non-finite at step {first + bad} (loss '
              f'{rows[bad, 0]}); stopped. {where}; lower the learning rate or clip '
              'gradients (optimizer.grad_clip) and resume or restart.')
        names = [n for n in step_lib.METRICS if n != 'finite']
        rows = rows[:, [step_lib.METRICS.index(n) for n in names]]
        writer.write_steps('train', first, names, rows[:-1] if log_now else rows)
        if not boundary:
          continue
        if log_now:
          now = time.perf_counter()
          r = dict(zip(names, rows[-1].tolist()))
          r.update(learning_rate=float(run.lr_fn(done - 1)),
                   density=float(jax.device_get(density_fn(state.opt_state))),
                   steps_per_sec=n_window / max(now - t_window, 1e-9))
          writer.write('train', done, r)
          writer.progress(done, loss=r['loss'], acc=r['accuracy'],
                          **{f'{k}_acc': v['accuracy'] for k, v in last_eval.items()})
        if eval_now:
          last_eval = evaluate_splits(run, state, eval_fn, t.eval_splits)
          writer.write('eval', done, eval_row(last_eval, state.opt_state))
          if t.early_stopping:
            if stopper.update(done, last_eval['validation']['loss']):
              ckpts.save_named('best', {'params': state.params,
                                        'model_state': state.model_state})
            if stopper.should_stop:
              save_now = True
        writer.flush()
        if save_now or stop:
          ckpts.save(done, state, {'step': done, 'data_position': feed.position,
                                   'settings_hash': settings_hash}, wait=stop)
        if stop:
          raise Interrupted(caught[0], done, ckpts.steps_dir)
        if stopper.should_stop:
          break
        if log_now:    # the window's clock restarts after evaluation and saving
          t_window, n_window = time.perf_counter(), 0
    ckpts.wait()
    if not last_eval:      # the run had already finished: evaluate what is there
      last_eval = evaluate_splits(run, state, eval_fn, t.eval_splits)
  finally:
    feed.close()
    writer.close()
    ckpts.close()
  summary = {'steps': t.steps, 'settings_hash': settings_hash, 'workdir': str(workdir),
             'eval': last_eval, **density_stats(state.opt_state),
             'train_seconds_this_process': time.perf_counter() - t_start,
             'resumed_from': start or None, 'final_step': int(state.step),
             'stopped_early': stopper.should_stop,
             'best_validation': ({'step': stopper.best_step, 'loss': stopper.best}
                                 if stopper.best is not None else None)}
  metrics_lib.write_json(workdir / 'summary.json', summary)
  return summary

