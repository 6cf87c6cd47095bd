"""Configs to objects, in this one place: each entry point here turns its
config into typed settings once (`config.to_settings`), builds the `Task`
(model, loss, data, optimizer, schedule) from them with `sparsejax.build`,
and runs a program on it. Everything below this module takes objects;
nothing below imports the config.

The `build_*` functions of `sparsejax.build` are re-exported here;
`build_task` and `build_lottery` also take a config (turned into settings).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import ml_collections

from sparsejax import build, config as config_lib, optim
from sparsejax.build import (build_dataset, build_distill, build_loss, build_model,  # noqa: F401
                             build_schedule, prunable_rule, wrap)
from sparsejax.config import ConfigError
from sparsejax.core import schedules
from sparsejax.data import lm_tokenizer
from sparsejax.programs import export, export_verify, finetune as finetune_lib, peft
from sparsejax.programs import lottery as lottery_lib
from sparsejax.settings import Settings
from sparsejax.train import checkpoint as ckpt_lib, loop, periodic, task as task_lib
from sparsejax.train import weights as weights_lib


def settings(config) -> Settings:
  """The typed settings of a config; Settings pass through."""
  return config if isinstance(config, Settings) else config_lib.to_settings(config)


def build_task(config, *, dataset=None, schedule=None) -> task_lib.Task:
  """The Task a config (or its Settings) describes (dataset and schedule may
  be given, e.g. reused)."""
  return build.build_task(settings(config), dataset=dataset, schedule=schedule)


def with_teacher(teacher: str, task: task_lib.Task, abstract, init_from: str | None = None,
                 ) -> task_lib.Task:
  """`task` with its Distill's teacher weights, per `teacher` (the settings'
  `distill.teacher`): a path is loaded (checked against `abstract`, a
  TrainState of the model); 'start' is left to the program (the weights it
  starts from, before it prunes them), except when `init_from` is a
  `sparsejax prune` workdir (the weights it was pruned from are loaded) or is
  pruned already ('fixed' takes its mask from its zeros), which is an error.
  `init_from` None: the run starts from a fresh initialisation, where 'start'
  is an error. (A config or its Settings in place of `teacher`: its
  `distill.teacher`, as before the settings were passed.)"""
  if task.distill is None:
    return task
  if not isinstance(teacher, str):
    teacher = settings(teacher).distill.teacher
  source, key = teacher, "config key 'distill.teacher'"
  if source == 'start':
    if init_from is None:
      raise ConfigError(f"{key}='start' distills from the weights the run starts from, but "
                        'a train run starts from a fresh initialisation: fine-tune trained '
                        "weights (finetune.init_from) or give the teacher's weights as a path")
    prune_json = pathlib.Path(init_from).expanduser() / 'prune.json'
    if prune_json.is_file():     # a `sparsejax prune` workdir: its dense source
      source = str(json.loads(prune_json.read_text())['report']['from'])
      key = f"{key}='start' (the weights {init_from} was pruned from)"
    elif task.schedule.needs_start:
      raise ConfigError(f"{key}='start': pruning.schedule {type(task.schedule).__name__!r} "
                        f'takes its mask from the zeros of {init_from}, whose weights are '
                        'therefore pruned already and no dense teacher; give the dense '
                        "weights as distill.teacher=PATH (a `sparsejax prune` workdir "
                        'records them)')
    else:
      return task
  path = pathlib.Path(source).expanduser()
  if source == 'minilm':
    raise ConfigError(f"{key}: 'minilm' has no trained task head; give the weights of a "
                      'fine-tuned model')
  pretrained_lm = lm_tokenizer.is_model_spec(source)   # 'smollm2', .gguf, HF folder
  if not pretrained_lm and not path.exists():
    raise ConfigError(f'{key}: {source} does not exist')
  if not pretrained_lm and not path.is_dir() and path.suffix not in ('.npz', '.safetensors'):
    raise ConfigError(f'{key}: {source} is neither a sparsejax run or checkpoint nor a .npz '
                      '/ .safetensors file')
  try:
    params, model_state = weights_lib.load_weights(source if pretrained_lm else path,
                                                   abstract.params, abstract.model_state)
  except ckpt_lib.CheckpointError as e:
    raise ConfigError(f'{key}: {e}') from None
  return task.replace(distill=task.distill.replace(
      teacher=params, teacher_model_state=model_state or None))


def dense_run(task: task_lib.Task) -> loop.Run:
  """The task built dense and without a teacher: the state its weights load into."""
  return wrap_setup(loop.build, task.replace(schedule=schedules.Dense(), distill=None))


def record(config) -> dict:
  """What a workdir records of its config (config.json)."""
  return config_lib.record(config)


def train_and_evaluate(config, workdir, *, progress: bool = True, mesh=None,
                       start: loop.Start | None = None, snapshots: tuple[int, ...] = (),
                       **changes: Any) -> dict:
  """`loop.train` on the config's task (fields replaced by `changes`); the summary."""
  s = config_lib.to_settings(config)
  task = build.build_task(s)
  if changes:
    task = wrap('run settings', task.replace, **changes)
  if task.distill is not None and not (start is not None and s.distill.teacher == 'start'):
    task = with_teacher(s.distill.teacher, task, dense_run(task).abstract)
  recorded = record(config)
  result = wrap_setup(loop.train, task, workdir, start=start, snapshots=snapshots,
                      record=recorded, progress=progress, mesh=mesh)
  return {**result.summary, 'settings_hash': recorded['settings_hash']}


def wrap_setup(fn, *args, **kwargs):
  """Runs a program; setup and schedule errors become ConfigErrors (one CLI line)."""
  try:
    return fn(*args, **kwargs)
  except (task_lib.SetupError, schedules.ScheduleError) as e:
    raise ConfigError(str(e)) from None


# --- programs from a config -------------------------------------------------------------

EXTENT_KEYS = ('lottery.levels', 'lottery.replicates', 'lottery.controls',
               'lottery.control_levels')


def lottery_dir(config, workdir) -> pathlib.Path:
  """workdir/lottery_<hash of the result-changing settings> (OpenLTH's naming:
  defaults and keys that only add work are left out, so a longer run extends a
  shorter one in place)."""
  keep = {k: v for k, v in config_lib.changed(config).items()
          if k not in EXTENT_KEYS and k.rsplit('.', 1)[-1] not in periodic.NO_EFFECT_KEYS}
  digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
  return pathlib.Path(workdir).absolute() / f'lottery_{digest.hexdigest()[:10]}'


def build_lottery(config) -> tuple[task_lib.Task, lottery_lib.Lottery]:
  """(task, Lottery) of a config (or its Settings): the dense task and the
  lottery's settings."""
  s = settings(config)
  if s.distill.teacher:
    raise ConfigError("config key 'distill.teacher': the lottery does not distill; "
                      'distillation is for train and finetune (method masked)')
  if s.pruning.schedule != 'dense' or s.pruning.sparsity:
    raise ConfigError("the lottery makes its own masks: leave pruning.schedule 'dense' and "
                      "sparsity 0; its per-layer rates come from pruning.scales, "
                      'pruning.overrides and lottery.allocation')
  task = build.build_task(s)
  lot = s.lottery
  finetune_tx = None
  if lot.rewind == 'none':   # keep training at the schedule's final learning rate
    o = dict(s.optimizer, schedule='constant', warmup_steps=0,
             learning_rate=float(task.loop.learning_rate(task.updates)))
    finetune_tx, _ = optim.build_optimizer(o, task.updates)
  spec = wrap('lottery settings', lottery_lib.Lottery, levels=lot.levels,
              prune_fraction=lot.prune_fraction, sparsities=lot.sparsities,
              rewind=lot.rewind, rewind_step=lot.rewind_step, controls=lot.controls,
              control_levels=lot.control_levels, replicates=lot.replicates,
              allocation=build.build_allocation(s.pruning), finetune_optimizer=finetune_tx)
  return task, spec


def run_lottery(config, workdir, *, progress: bool = False, log=print) -> list[dict]:
  task, spec = build_lottery(config_lib.to_settings(config))
  wrap_setup(loop.build, task)          # setup errors before any folder is made
  root = lottery_dir(config, workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / 'lottery.json').write_text(config_lib.to_json(config) + '\n')
  return wrap_setup(lottery_lib.run_lottery, task, root, spec, progress=progress,
                    record=record(config), log=log)


def run_finetune(config, workdir, *, progress: bool = False) -> dict:
  """Loads `finetune.init_from`, then prunes and recovers ('masked') or runs a
  parameter-efficient method; returns the result row."""
  s = config_lib.to_settings(config)
  f = s.finetune
  if not f.init_from:
    raise ConfigError("config key 'finetune.init_from' must name trained weights")
  if f.method != 'masked':
    if s.distill.teacher:
      raise ConfigError(f"config key 'distill.teacher': finetune.method {f.method!r} does "
                        "not distill; distillation is for finetune.method 'masked'")
    if s.pruning.schedule != 'dense' or s.pruning.sparsity:
      raise ConfigError(f"finetune.method {f.method!r} trains a part of the model and "
                        "keeps no masks: leave pruning.schedule 'dense' and sparsity 0")
    return wrap_setup(peft.run_peft, build.build_task(s), f, workdir, progress=progress,
                      record=record(config))
  task = build.build_task(s)
  run = dense_run(task)
  task = with_teacher(s.distill.teacher, task, run.abstract, init_from=f.init_from)
  params, model_state = weights_lib.load_weights(f.init_from, run.abstract.params,
                                                 run.abstract.model_state)
  return wrap_setup(finetune_lib.prune_then_finetune, task, params, workdir,
                    model_state=model_state, progress=progress, record=record(config))


def _recorded_config(path: pathlib.Path, error: type[Exception], how: str):
  """The config a run recorded in `path` (config.json); `error` when it
  recorded none (a run started from Python: `how` says what to do instead)."""
  recorded = json.loads(path.read_text())
  if 'config' not in recorded:
    raise error(how)
  return ml_collections.ConfigDict(recorded['config'])


def task_of_run(workdir) -> task_lib.Task:
  """The Task a run's recorded config (workdir/config.json) builds: what
  `sparsejax eval` restores its checkpoints into."""
  path = pathlib.Path(workdir).absolute() / 'config.json'
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'{path.parent} has no config.json: not a sparsejax run')
  return build_task(_recorded_config(path, ckpt_lib.CheckpointError, (
      f'{path} records a run started from Python, not from a config: evaluate it from '
      'Python (programs.evaluate)')))


def verify_export(workdir, export_dir, batch: int = 128, report: bool = False):
  """`export.verify` (with `report`: `export_check.verify_report`'s dict) for a run
  made from a config: its model, its final weights and the first `batch` test
  examples. A run started from Python records no config to rebuild its model
  from: `export.NotVerifiable`, saying how to verify from Python."""
  s = config_lib.to_settings(_recorded_config(
      pathlib.Path(workdir) / 'config.json', export.NotVerifiable,
      f'{workdir} is a run started from Python (its config.json records no config), so its '
      'model cannot be rebuilt here; verify from Python with export.verify(task.model.apply, '
      'params, model_state, x, export_dir), the weights from results.final_weights(workdir)'))
  dataset = build_dataset(s.data)
  return export_verify.verify_on_test(build_model(s.model, dataset), dataset, workdir,
                                      export_dir, batch, report)
