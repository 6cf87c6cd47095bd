"""Configs to objects, in this one place: a config builds a `Task` (model,
loss, data, optimizer, schedule) and the programs run it. Everything below
this module takes objects; nothing below imports the config.

Names in a config are registry names or import paths `pkg.module:Name`:
`model.name` (a Flax Linen or NNX module class, or a function returning one),
`data.name` (a function of `data.options` returning a `sparsejax.data.Dataset`),
`loss` (an optax loss name or fn(outputs, labels) -> per-example losses),
`optimizer.name` (any optax optimizer) and `pruning.schedule`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import optax

from sparsejax import config as config_lib, data as data_lib, models, optim
from sparsejax.data import augment as augment_lib
from sparsejax.config import ConfigError
from sparsejax.core import allocation as alloc_lib, imports, registry, schedules, select
from sparsejax.core import tree as tree_lib
from sparsejax.train import distill as distill_lib, loop, task as task_lib


def _wrap(what: str, fn, *args, **kwargs):
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise ConfigError(f'{what}: {e}') from None


def build_schedule(p: config_lib.PruningSettings, seed: int = 0) -> schedules.Schedule:
  """The schedule: its class's defaults, overridden only by the keys the config set."""
  cls = _wrap("config key 'pruning.schedule'", registry.schedule_class, p.schedule)
  defaults = registry.schedule_fields(p.schedule)
  options = dict(p.options)
  modifiers = {k: options.pop(k) for k in alloc_lib.MODIFIERS if k in options}
  pattern_options = options.pop('pattern_options', None)
  if modifiers:
    if 'allocation' not in defaults:
      raise ConfigError(f'config keys {sorted(modifiers)}: schedule {p.schedule!r} has no '
                        'allocation')
    base = options.get('allocation', defaults['allocation'])
    if isinstance(base, str):
      base = _wrap("config key 'pruning.allocation'", alloc_lib.Allocation, base)
    options['allocation'] = _wrap('pruning allocation', dataclasses.replace, base, **modifiers)
  if pattern_options is not None:
    if 'pattern' not in options:
      raise ConfigError("config key 'pruning.pattern_options' is set without 'pruning.pattern'")
    options['pattern'] = _wrap("config key 'pruning.pattern'", select.make_pattern,
                               options['pattern'], **pattern_options)
  return _wrap(f'schedule {p.schedule!r}', cls, sparsity=p.sparsity, seed=seed, **options)


def prunable_rule(p: config_lib.PruningSettings) -> tree_lib.PrunableRule:
  return _wrap('pruning rule', tree_lib.PrunableRule, include=p.include, exclude=p.exclude,
               min_ndim=p.min_ndim)


def build_dataset(d: config_lib.DataSettings):
  if ':' in d.name:
    fn = _wrap("config key 'data.name'", imports.import_object, d.name, 'data source')
    dataset = _wrap(f'data source {d.name!r}', fn, **d.options)
    if not isinstance(dataset, data_lib.base.Dataset):
      raise ConfigError(f'data source {d.name!r} returned {type(dataset).__name__}, not a '
                        'sparsejax.data.Dataset')
  else:
    dataset = _wrap('data settings', data_lib.load_dataset, d.name, **d.options)
  if not d.shuffle:
    if not isinstance(dataset.train, data_lib.base.ArraySource):
      raise ConfigError("config key 'data.shuffle': False needs an in-memory train split, "
                        f'{d.name!r} gives {type(dataset.train).__name__}')
    dataset = dataclasses.replace(
        dataset, train=dataclasses.replace(dataset.train, shuffle=False))
  return dataset


def _pretrained_architecture(spec) -> dict:
  """`llama`'s settings from a pretrained model's metadata (`model.options.
  pretrained`: 'smollm2', a .gguf file or a Hugging Face folder); the other
  options override them (e.g. dtype, remat)."""
  from sparsejax.models import pretrained
  try:
    return dataclasses.asdict(pretrained.architecture(spec))
  except (OSError, ImportError, ValueError) as e:
    raise ConfigError(f'config key model.options.pretrained={spec!r}: {e}') from None


def build_model(m: config_lib.ModelSettings, dataset):
  """The model; its output size comes from the dataset unless set.

  `llama` with `options.pretrained` takes its architecture from that
  checkpoint. An NNX module class, or a function that takes `rngs` and returns an NNX
  module, becomes `nnx_model(lambda rngs: target(**options, rngs=rngs))`: its
  weights are drawn from the run's seed like a Linen model's. A function
  without `rngs` that returns a built NNX module keeps that module's weights.
  """
  if ':' in m.name:
    target = _wrap("config key 'model.name'", imports.import_object, m.name, 'model')
  elif m.name in models.MODELS:
    target = models.MODELS[m.name]
  else:
    raise ConfigError(f"config key 'model.name': unknown model {m.name!r}; choose from "
                      f"{sorted(models.MODELS)} or give an import path 'pkg.module:Class'")
  from flax import nnx
  options = dict(m.options)
  if target is models.Llama and 'pretrained' in options:
    options = {**_pretrained_architecture(options.pop('pretrained')), **options}
  accepted = _accepted(target)
  size_key = 'vocab_size' if dataset.task == 'lm' else 'num_classes'
  if accepted is not None and size_key in accepted:
    options.setdefault(size_key, dataset.num_classes)
  if dataset.task == 'lm' and accepted is not None and 'max_len' in accepted:
    options.setdefault('max_len', dataset.input_shape[0])
  if accepted is not None:
    unknown = sorted(set(options) - accepted - {'rngs'})
    if unknown:
      raise ConfigError(f'config key model.options.{unknown[0]}: model {m.name!r} has no '
                        f'setting {unknown[0]!r}; its settings are '
                        f'{sorted(accepted - {"rngs"})}')
  nnx_class = isinstance(target, type) and issubclass(target, nnx.Module)
  if nnx_class or (not isinstance(target, type) and accepted is not None
                   and 'rngs' in accepted):
    if 'rngs' in options:
      raise ConfigError("config key model.options.rngs: an NNX model's rngs come from the "
                        "run's seed; set 'seed' instead")
    factory = functools.partial(target, **options)
    model = _wrap(f'model {m.name!r}', task_lib.nnx_model, lambda rngs: factory(rngs=rngs))
  else:
    model = _wrap(f'model {m.name!r}', target, **options)
  if isinstance(model, nnx.Module):
    model = task_lib.nnx_model(model)
  if not (hasattr(model, 'init') and hasattr(model, 'apply')):
    raise ConfigError(f'model {m.name!r} gave {type(model).__name__}, which has no init/apply')
  return model


def _accepted(target) -> set[str] | None:
  """The keyword settings `target` takes (None: any). An NNX class reports
  `(*args, **kwargs)` as its signature; its `__init__` says what it takes."""
  if dataclasses.is_dataclass(target):
    return {f.name for f in dataclasses.fields(target) if f.name not in ('parent', 'name')}
  from flax import nnx
  if isinstance(target, type) and issubclass(target, nnx.Module):
    target = target.__init__
  try:
    params = inspect.signature(target).parameters
  except (TypeError, ValueError):
    return None
  if any(p.kind == p.VAR_KEYWORD for p in params.values()):
    return None
  return set(params) - {'self'}


def build_loss(name: str, options=None):
  """fn(outputs, labels) -> per-example losses, with `options` bound."""
  if not name:
    fn = task_lib.softmax_cross_entropy
  elif ':' in name:
    fn = _wrap("config key 'loss.name'", imports.import_object, name, 'loss')
  else:
    fn = getattr(optax.losses, name, None)
    if fn is None:
      raise ConfigError(f"config key 'loss.name': optax.losses has no {name!r}; give an optax "
                        "loss name or an import path 'pkg.module:fn'")
  if not options:
    return fn
  accepted = _accepted(fn)
  if accepted is not None:
    unknown = sorted(set(options) - accepted)
    if unknown:
      raise ConfigError(f'config key loss.options.{unknown[0]}: the loss takes '
                        f'{sorted(accepted - {"outputs", "labels", "logits"})}')
  return functools.partial(fn, **options)


def build_task(config, *, dataset=None, schedule=None) -> task_lib.Task:
  """The Task a config describes (dataset and schedule may be given, e.g. reused)."""
  s = config_lib.to_settings(config)
  dataset = dataset if dataset is not None else build_dataset(s.data)
  model = build_model(s.model, dataset)
  schedule = schedule if schedule is not None else build_schedule(s.pruning, s.seed)
  accumulate = s.optimizer['accumulate']
  steps, per_epoch = s.train.steps, data_lib.steps_per_epoch(len(dataset.train),
                                                             s.data.batch_size)
  if s.train.epochs:
    if steps != config_lib.default_config().train.steps:
      raise ConfigError("config keys 'train.steps' and 'train.epochs' are both set; set one")
    steps = s.train.epochs * per_epoch
  if steps % accumulate:
    raise ConfigError(f"config key 'train.steps'={steps} is not a multiple of "
                      f'optimizer.accumulate={accumulate}')
  if (s.data.crop_padding or s.data.flip) and len(dataset.input_shape) != 3:
    raise ConfigError(f'config keys data.crop_padding / data.flip need images (height, width, '
                      f'channels); dataset {dataset.name!r} has examples of shape '
                      f'{dataset.input_shape}')
  horizon = schedule.restart_period or steps // accumulate
  spec = optim.in_steps(s.optimizer, max(per_epoch // accumulate, 1))
  tx, lr_fn = _wrap('optimizer', optim.build_optimizer, spec, horizon)
  t = s.train
  return _wrap('run settings', task_lib.Task, distill=build_distill(s.distill),
               dataset=dataset, optimizer=tx, model=model, output_loss=build_loss(*s.loss),
               augment=augment_lib.make_augment(s.data.crop_padding, s.data.flip),
               schedule=schedule, rule=prunable_rule(s.pruning), steps=steps,
               batch_size=s.data.batch_size, eval_batch_size=s.data.eval_batch_size,
               seed=s.seed, accumulate=accumulate, learning_rate=lr_fn,
               log_every=t.log_every, eval_every=t.eval_every,
               checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints,
               eval_splits=t.eval_splits, eval_at_start=t.eval_at_start,
               early_stopping=t.early_stopping, optimizer_state=t.optimizer_state,
               compute_dtype=t.compute_dtype, param_dtype=t.param_dtype,
               pack_masks=t.pack_masks, writers=t.writers,
               mesh_shape=s.mesh.shape,
               mesh_rules=s.mesh.rules, mesh_fsdp=s.mesh.fsdp, prefetch=s.data.prefetch, on_device=s.data.on_device)


def build_distill(d: config_lib.DistillSettings) -> distill_lib.Distill | None:
  """The distillation term (its class's defaults, overridden by the keys the
  config set), without its teacher's weights: `with_teacher` loads those
  where a program trains. None when `distill.teacher` is ''."""
  if not d.teacher:
    return None
  try:
    return distill_lib.Distill(**d.options)
  except distill_lib.DistillError as e:
    raise ConfigError(f"config key 'distill.{e.key}': {e}") from None


def with_teacher(config, task: task_lib.Task, abstract, init_from: str | None = None,
                 ) -> task_lib.Task:
  """`task` with its Distill's teacher weights, per `distill.teacher`: a path
  is loaded (checked against `abstract`, a TrainState of the model);
  'start' is left to the program (the weights it starts from, before it
  prunes them), except when `init_from` is a `sparsejax prune` workdir (the
  weights it was pruned from are loaded) or is pruned already ('fixed' takes
  its mask from its zeros), which is an error. `init_from` None: the run
  starts from a fresh initialisation, where 'start' is an error."""
  import json
  import pathlib
  if task.distill is None:
    return task
  source = config_lib.to_settings(config).distill.teacher
  key = "config key 'distill.teacher'"
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
  from sparsejax.data import lm_tokenizer
  pretrained_lm = lm_tokenizer.is_model_spec(source)   # 'smollm2', .gguf, HF folder
  if not pretrained_lm and not path.exists():
    raise ConfigError(f'{key}: {source} does not exist')
  if not pretrained_lm and not path.is_dir() and path.suffix not in ('.npz', '.safetensors'):
    raise ConfigError(f'{key}: {source} is neither a sparsejax run or checkpoint nor a .npz '
                      '/ .safetensors file')
  from sparsejax.train import checkpoint as ckpt_lib, weights as weights_lib
  try:
    params, model_state = weights_lib.load_weights(source if pretrained_lm else path,
                                                   abstract.params, abstract.model_state)
  except ckpt_lib.CheckpointError as e:
    raise ConfigError(f'{key}: {e}') from None
  return task.replace(distill=task.distill.replace(
      teacher=params, teacher_model_state=model_state or None))


def record(config) -> dict:
  """What a workdir records of its config (config.json)."""
  return {'config': config_lib.plain(config), 'settings_hash': config_lib.settings_hash(config)}


def train_and_evaluate(config, workdir, *, progress: bool = True, mesh=None,
                       start: loop.Start | None = None, snapshots: tuple[int, ...] = (),
                       **changes: Any) -> dict:
  """`loop.train` on the config's task (fields replaced by `changes`); the summary."""
  task = build_task(config)
  if changes:
    task = _wrap('run settings', task.replace, **changes)
  if task.distill is not None and not (start is not None and
                                       config_lib.to_settings(config).distill.teacher == 'start'):
    run = wrap_setup(loop.build, task.replace(schedule=schedules.Dense(), distill=None))
    task = with_teacher(config, task, run.abstract)
  result = wrap_setup(loop.train, task, workdir, start=start, snapshots=snapshots,
                       record=record(config), progress=progress, mesh=mesh)
  return {**result.summary, 'settings_hash': config_lib.settings_hash(config)}


def wrap_setup(fn, *args, **kwargs):
  """Runs a program; setup and schedule errors become ConfigErrors (one CLI line)."""
  try:
    return fn(*args, **kwargs)
  except (task_lib.SetupError, schedules.ScheduleError) as e:
    raise ConfigError(str(e)) from None


# --- programs from a config -------------------------------------------------------------

EXTENT_KEYS = ('lottery.levels', 'lottery.replicates', 'lottery.controls',
               'lottery.control_levels')


def lottery_dir(config, workdir):
  """workdir/lottery_<hash of the result-changing settings> (OpenLTH's naming:
  defaults and keys that only add work are left out, so a longer run extends a
  shorter one in place)."""
  import hashlib
  import json
  import pathlib
  from sparsejax.train import periodic
  changed = config_lib.changed_keys(
      config_lib._merge(config_lib.default_config().to_dict(), config_lib.plain(config)),
      config_lib.plain(config_lib.default_config()))
  keep = {k: v for k, v in changed.items()
          if k not in EXTENT_KEYS and k.rsplit('.', 1)[-1] not in periodic.NO_EFFECT_KEYS}
  digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
  return pathlib.Path(workdir).absolute() / f'lottery_{digest.hexdigest()[:10]}'


def build_lottery(config):
  """(task, Lottery) of a config: the dense task and the lottery's settings."""
  from sparsejax.programs import lottery as lottery_lib
  s = config_lib.to_settings(config)
  if s.distill.teacher:
    raise ConfigError("config key 'distill.teacher': the lottery does not distill; "
                      'distillation is for train and finetune (method masked)')
  if s.pruning.schedule != 'dense' or s.pruning.sparsity:
    raise ConfigError("the lottery makes its own masks: leave pruning.schedule 'dense' and "
                      "sparsity 0; its per-layer rates come from pruning.scales, "
                      'pruning.overrides and lottery.allocation')
  task = build_task(config)
  lot = s.lottery
  o = dict(s.optimizer)
  finetune_tx = None
  if lot.rewind == 'none':   # keep training at the schedule's final learning rate
    o.update(schedule='constant', warmup_steps=0,
             learning_rate=float(task.learning_rate(task.updates)))
    finetune_tx, _ = optim.build_optimizer(o, task.updates)
  mods = {k: v for k, v in s.pruning.options.items() if k in alloc_lib.MODIFIERS}
  allocation = _wrap("config key 'pruning.allocation'", alloc_lib.Allocation,
                     s.pruning.options.get('allocation', 'uniform'), **mods)
  spec = _wrap('lottery settings', lottery_lib.Lottery, levels=lot.levels,
               prune_fraction=lot.prune_fraction, sparsities=lot.sparsities,
               rewind=lot.rewind,
               rewind_step=lot.rewind_step, controls=lot.controls,
               control_levels=lot.control_levels, replicates=lot.replicates,
               allocation=allocation, finetune_optimizer=finetune_tx)
  return task, spec


def run_lottery(config, workdir, *, progress: bool = False, log=print) -> list[dict]:
  from sparsejax.programs import lottery as lottery_lib
  task, spec = build_lottery(config)
  wrap_setup(loop.build, task)          # setup errors before any folder is made
  root = lottery_dir(config, workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / 'lottery.json').write_text(config_lib.to_json(config) + '\n')
  return wrap_setup(lottery_lib.run_lottery, task, root, spec, progress=progress,
                     record=record(config), log=log)


def run_finetune(config, workdir, *, progress: bool = False) -> dict:
  """Loads `finetune.init_from`, then prunes and recovers ('masked') or runs a
  parameter-efficient method; returns the result row."""
  from sparsejax.programs import finetune as finetune_lib
  from sparsejax.train import weights as weights_lib
  s = config_lib.to_settings(config)
  f = s.finetune
  if not f.init_from:
    raise ConfigError("config key 'finetune.init_from' must name trained weights")
  if f.method != 'masked':
    from sparsejax.programs import peft
    if s.distill.teacher:
      raise ConfigError(f"config key 'distill.teacher': finetune.method {f.method!r} does "
                        "not distill; distillation is for finetune.method 'masked'")
    if s.pruning.schedule != 'dense' or s.pruning.sparsity:
      raise ConfigError(f"finetune.method {f.method!r} trains a part of the model and "
                        "keeps no masks: leave pruning.schedule 'dense' and sparsity 0")
    task = build_task(config)
    return wrap_setup(peft.run_peft, task, f, workdir, progress=progress,
                       record=record(config))
  task = build_task(config)
  run = wrap_setup(loop.build, task.replace(schedule=schedules.Dense(), distill=None))
  task = with_teacher(config, task, run.abstract, init_from=f.init_from)
  params, model_state = weights_lib.load_weights(f.init_from, run.abstract.params,
                                                 run.abstract.model_state)
  return wrap_setup(finetune_lib.prune_then_finetune, task, params, workdir,
                     model_state=model_state, progress=progress, record=record(config))


def task_of_run(workdir) -> task_lib.Task:
  """The Task a run's recorded config (workdir/config.json) builds: what
  `sparsejax eval` restores its checkpoints into."""
  import json
  import pathlib

  import ml_collections
  from sparsejax.train import checkpoint as ckpt_lib
  path = pathlib.Path(workdir).absolute() / 'config.json'
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'{path.parent} has no config.json: not a sparsejax run')
  recorded = json.loads(path.read_text())
  if 'config' not in recorded:
    raise ckpt_lib.CheckpointError(f'{path} records a run started from Python, not from a '
                                   'config: evaluate it from Python (programs.evaluate)')
  return build_task(ml_collections.ConfigDict(recorded['config']))


def verify_export(workdir, export_dir, batch: int = 128, report: bool = False):
  """`export.verify` (with `report`: `export_check.verify_report`'s dict) for a run
  made from a config: its model, its final weights and the first `batch` test
  examples. A run started from Python records no config to rebuild its model
  from: `export.NotVerifiable`, saying how to verify from Python."""
  import json
  import pathlib
  import ml_collections
  import numpy as np
  from sparsejax.programs import export, export_check, results as results_lib
  recorded = json.loads((pathlib.Path(workdir) / 'config.json').read_text())
  if 'config' not in recorded:
    raise export.NotVerifiable(
        f'{workdir} is a run started from Python (its config.json records no config), so its '
        'model cannot be rebuilt here; verify from Python with export.verify(task.model.apply, '
        'params, model_state, x, export_dir), the weights from results.final_weights(workdir)')
  config = ml_collections.ConfigDict(recorded['config'])
  s = config_lib.to_settings(config)
  dataset = build_dataset(s.data)
  model = build_model(s.model, dataset)
  params, model_state, _ = results_lib.final_weights(workdir)
  x = dataset.test.get(np.arange(min(batch, len(dataset.test))))[0]
  check = export_check.verify_report(model.apply, params, model_state, x, export_dir,
                                     **task_lib.train_kwarg(model, False))   # as Task passes it
  return check if report else check['max_abs_diff']
