"""Typed settings to objects: each `build_*` takes a block of
`sparsejax.settings.Settings` (never the config) and returns what the
library takes: the schedule, the prunable-leaf rule, the dataset, the model,
the loss, the distillation term and, from all of them, the `Task`.
`sparsejax.experiment` turns a config into Settings once and calls these.

Names in the settings are registry names or import paths `pkg.module:Name`:
`model.name` (a Flax Linen or NNX module class, or a function returning one),
`data.name` (a function of `data.options` returning a `sparsejax.data.Dataset`),
`loss` (an optax loss name or fn(outputs, labels) -> per-example losses),
`optimizer.name` (any optax optimizer) and `pruning.schedule`. A bad one is a
ConfigError naming the config key.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect

import optax
from flax import nnx

from sparsejax import data as data_lib, models, optim
from sparsejax.config_schema import default_config
from sparsejax.core import allocation as alloc_lib, imports, protocol, registry, schedules, select
from sparsejax.core import tree as tree_lib
from sparsejax.data import augment as augment_lib
from sparsejax.settings import (ConfigError, DataSettings, DistillSettings, ModelSettings,
                                PruningSettings, Settings)
from sparsejax.train import distill as distill_lib, task as task_lib


def wrap(what: str, fn, *args, **kwargs):
  """fn(*args, **kwargs); its TypeError or ValueError becomes a ConfigError
  'what: message'."""
  try:
    return fn(*args, **kwargs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise ConfigError(f'{what}: {e}') from None


def build_schedule(p: PruningSettings, seed: int = 0) -> schedules.Schedule:
  """The schedule: its class's defaults, overridden only by the keys the config set."""
  cls = wrap("config key 'pruning.schedule'", registry.schedule_class, p.schedule)
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
      base = wrap("config key 'pruning.allocation'", alloc_lib.Allocation, base)
    options['allocation'] = wrap('pruning allocation', dataclasses.replace, base, **modifiers)
  if pattern_options is not None:
    if 'pattern' not in options:
      raise ConfigError("config key 'pruning.pattern_options' is set without 'pruning.pattern'")
    options['pattern'] = wrap("config key 'pruning.pattern'", select.make_pattern,
                              options['pattern'], **pattern_options)
  return wrap(f'schedule {p.schedule!r}', cls, sparsity=p.sparsity, seed=seed, **options)


def build_allocation(p: PruningSettings, default: str = 'uniform') -> alloc_lib.Allocation:
  """`pruning.allocation` (else `default`) with its modifiers (overrides,
  scales, erk_power_scale): the per-layer rates of the lottery's levels."""
  mods = {k: v for k, v in p.options.items() if k in alloc_lib.MODIFIERS}
  return wrap("config key 'pruning.allocation'", alloc_lib.Allocation,
              p.options.get('allocation', default), **mods)


def prunable_rule(p: PruningSettings) -> tree_lib.PrunableRule:
  return wrap('pruning rule', tree_lib.PrunableRule, include=p.include, exclude=p.exclude,
              min_ndim=p.min_ndim)


def build_dataset(d: DataSettings):
  if ':' in d.name:
    fn = wrap("config key 'data.name'", imports.import_object, d.name, 'data source')
    dataset = wrap(f'data source {d.name!r}', fn, **d.options)
    if not isinstance(dataset, data_lib.base.Dataset):
      raise ConfigError(f'data source {d.name!r} returned {type(dataset).__name__}, not a '
                        'sparsejax.data.Dataset')
  else:
    dataset = wrap('data settings', data_lib.load_dataset, d.name, **d.options)
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


def build_model(m: ModelSettings, dataset):
  """The model; its output size comes from the dataset unless set.

  `llama` with `options.pretrained` takes its architecture from that
  checkpoint. An NNX module class, or a function that takes `rngs` and returns an NNX
  module, becomes `nnx_model(lambda rngs: target(**options, rngs=rngs))`: its
  weights are drawn from the run's seed like a Linen model's. A function
  without `rngs` that returns a built NNX module keeps that module's weights.
  """
  target = wrap("config key 'model.name'", models.model_class, m.name)
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
    model = wrap(f'model {m.name!r}', task_lib.nnx_model, lambda rngs: factory(rngs=rngs))
  else:
    model = wrap(f'model {m.name!r}', target, **options)
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
  else:
    try:
      fn = imports.resolve(name, imports.Namespace(optax.losses), 'loss')
    except imports.UnknownName as e:
      raise ConfigError(f"config key 'loss.name': optax.losses has no {name!r}"
                        f"{imports.did_you_mean(e.near)}; give an optax loss name or an "
                        "import path 'pkg.module:fn'") from None
    except ValueError as e:
      raise ConfigError(f"config key 'loss.name': {e}") from None
  if not options:
    return fn
  accepted = _accepted(fn)
  if accepted is not None:
    unknown = sorted(set(options) - accepted)
    if unknown:
      raise ConfigError(f'config key loss.options.{unknown[0]}: the loss takes '
                        f'{sorted(accepted - {"outputs", "labels", "logits"})}')
  return functools.partial(fn, **options)


def build_distill(d: DistillSettings) -> distill_lib.Distill | None:
  """The distillation term (its class's defaults, overridden by the keys the
  config set), without its teacher's weights: `experiment.with_teacher` loads
  those where a program trains. None when `distill.teacher` is ''."""
  if not d.teacher:
    return None
  try:
    return distill_lib.Distill(**d.options)
  except distill_lib.DistillError as e:
    raise ConfigError(f"config key 'distill.{e.key}': {e}") from None


def build_task(s: Settings, *, dataset=None, schedule=None) -> task_lib.Task:
  """The Task of the settings (dataset and schedule may be given, e.g. reused)."""
  if s.model.name == 'llama' and 'pretrained' in s.model.options:
    _pretrained_architecture(s.model.options['pretrained'])   # a wrong path fails before the data
  dataset = dataset if dataset is not None else build_dataset(s.data)
  model = build_model(s.model, dataset)
  schedule = schedule if schedule is not None else build_schedule(s.pruning, s.seed)
  accumulate = s.optimizer['accumulate']
  steps, per_epoch = s.train.steps, data_lib.steps_per_epoch(len(dataset.train),
                                                             s.data.batch_size)
  if s.train.epochs:
    if steps != default_config().train.steps:
      raise ConfigError("config keys 'train.steps' and 'train.epochs' are both set; set one")
    steps = s.train.epochs * per_epoch
  if steps % accumulate:
    raise ConfigError(f"config key 'train.steps'={steps} is not a multiple of "
                      f'optimizer.accumulate={accumulate}')
  if (s.data.crop_padding or s.data.flip) and len(dataset.input_shape) != 3:
    raise ConfigError(f'config keys data.crop_padding / data.flip need images (height, width, '
                      f'channels); dataset {dataset.name!r} has examples of shape '
                      f'{dataset.input_shape}')
  horizon = protocol.restart_period(schedule) or steps // accumulate
  spec = optim.in_steps(s.optimizer, max(per_epoch // accumulate, 1))
  tx, lr_fn = wrap('optimizer', optim.build_optimizer, spec, horizon)
  t = s.train
  loop = wrap('run settings', task_lib.LoopSettings, steps=steps, seed=s.seed,
              learning_rate=lr_fn, log_every=t.log_every, eval_every=t.eval_every,
              checkpoint_every=t.checkpoint_every, keep_checkpoints=t.keep_checkpoints,
              eval_splits=t.eval_splits, eval_at_start=t.eval_at_start,
              early_stopping=t.early_stopping, prefetch=s.data.prefetch, writers=t.writers)
  return wrap('run settings', task_lib.Task, distill=build_distill(s.distill),
              dataset=dataset, optimizer=tx, model=model, output_loss=build_loss(*s.loss),
              augment=augment_lib.make_augment(s.data.crop_padding, s.data.flip),
              schedule=schedule, rule=prunable_rule(s.pruning),
              batch_size=s.data.batch_size, eval_batch_size=s.data.eval_batch_size,
              accumulate=accumulate, optimizer_state=t.optimizer_state,
              compute_dtype=t.compute_dtype, param_dtype=t.param_dtype,
              pack_masks=t.pack_masks, mesh_shape=s.mesh.shape,
              mesh_rules=s.mesh.rules, mesh_fsdp=s.mesh.fsdp,
              on_device=s.data.on_device, loop=loop)
