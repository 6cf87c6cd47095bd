"""The typed settings a config becomes: frozen dataclasses that the rest of
the code takes as arguments. `sparsejax.config.to_settings` builds them (and
checks every value); they are re-exported there. Plain data: this module
imports nothing of the package (the fine-tuning block is the PEFT program's
own `FinetuneSettings`, which the config layer builds)."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


class ConfigError(ValueError):
  """A config that cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class DataSettings:
  name: str
  options: Mapping[str, Any]
  batch_size: int
  eval_batch_size: int
  prefetch: int
  on_device: str           # 'auto', 'yes', 'no': keep the train split on the devices
  crop_padding: int        # random crops of padded images; 0 = off
  flip: bool               # random horizontal flips
  shuffle: bool            # a fresh order every epoch (False: the stored order)


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  name: str
  options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class PruningSettings:
  schedule: str            # registry name or 'pkg.module:Class'
  sparsity: float
  include: str | None      # the prunable-leaf rule
  exclude: str | None
  min_ndim: int
  options: Mapping[str, Any]   # only the keys the config set: schedule fields and modifiers


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  steps: int
  epochs: int              # > 0: the run's length in epochs instead of steps
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  eval_splits: tuple[str, ...]
  eval_at_start: bool      # evaluate before the first step (e.g. right after pruning)
  early_stopping: int      # stop after this many evals without a lower validation loss; 0 = off
  optimizer_state: str = 'dense'   # 'compact': state for the kept weights only (fixed masks)
  compute_dtype: str = 'float32'   # the model's forward/backward ('bfloat16': mixed precision)
  param_dtype: str = 'float32'     # how params and optimizer moments are stored
  pack_masks: bool = False         # masks as bits in the optimizer state
  writers: tuple[str, ...] = ()    # import paths of metric-writer factories (train.metrics)


@dataclasses.dataclass(frozen=True)
class MeshSettings:
  shape: tuple[int, int]                              # (data, model); -1 = the rest
  rules: tuple[tuple[str, tuple[str | None, ...]], ...]   # (leaf-path regex, partition spec)
  fsdp: bool = False       # also split params and their state over 'data'


@dataclasses.dataclass(frozen=True)
class LotterySettings:
  levels: int                      # pruning levels after the dense level 0
  prune_fraction: float            # of the remaining weights, per level
  sparsities: tuple[float, ...]    # per-level targets instead of prune_fraction; () = none
  rewind: str                      # 'init', 'step' (to rewind_step), 'lr' (keep weights, replay lr), 'none'
  rewind_step: int
  controls: tuple[str, ...]        # 'reinit', 'random_prune', 'oneshot'
  control_levels: tuple[int, ...]  # levels that get the controls; () = all
  replicates: int


@dataclasses.dataclass(frozen=True)
class DistillSettings:
  teacher: str                 # '' (off), 'start' (the dense start weights) or a weights path
  options: Mapping[str, Any]   # only the keys the config set: fields of train.distill.Distill


@dataclasses.dataclass(frozen=True)
class Settings:
  seed: int
  data: DataSettings
  model: ModelSettings
  loss: tuple[str, Mapping[str, Any]]   # (name or import path, options)
  optimizer: Mapping[str, Any]     # a resolved sparsejax.optim spec
  pruning: PruningSettings
  train: TrainSettings
  mesh: MeshSettings
  lottery: LotterySettings
  finetune: Any          # sparsejax.programs.peft_methods's FinetuneSettings
  distill: DistillSettings
