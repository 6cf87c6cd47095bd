"""The typed settings a config becomes: frozen dataclasses that the rest of
the code takes as arguments. `sparsejax.config.to_settings` builds them (and
checks every value); they are re-exported there."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class DataSettings:
  name: str
  options: Mapping[str, Any]
  batch_size: int
  eval_batch_size: int
  prefetch: int
  on_device: str           # 'auto', 'yes', 'no': keep the train split on the devices


@dataclasses.dataclass(frozen=True)
class ModelSettings:
  name: str
  options: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  name: str                # 'adam', 'adamw', 'sgd'
  learning_rate: float
  schedule: str            # 'constant', 'cosine', 'linear', 'plateau'; warmup_steps adds a warmup
  warmup_steps: int
  decay_steps: int         # 0: decay over the whole run
  end_factor: float        # final lr = learning_rate * end_factor
  weight_decay: float
  momentum: float
  nesterov: bool
  b1: float
  b2: float
  eps: float
  grad_clip: float         # global-norm clipping; 0 = off
  plateau_factor: float    # 'plateau': scale the lr by this when the loss stops falling
  plateau_patience: int    # ... for this many windows of plateau_steps steps
  plateau_steps: int       # the training loss is averaged over windows of this many steps


@dataclasses.dataclass(frozen=True)
class PruningSettings:
  schedule: str
  sparsity: float
  criterion: str
  allocation: str
  overrides: Mapping[str, float]
  scales: Mapping[str, float]
  erk_power_scale: float
  pattern: str
  pattern_options: Mapping[str, Any]
  include: str | None
  exclude: str | None
  min_ndim: int
  schedule_options: Mapping[str, Any]   # only the keys the chosen schedule takes


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  keep_checkpoints: int
  eval_splits: tuple[str, ...]
  eval_at_start: bool      # evaluate before the first step (e.g. right after pruning)
  early_stopping: int      # stop after this many evals without a lower validation loss; 0 = off


@dataclasses.dataclass(frozen=True)
class MeshSettings:
  shape: tuple[int, int]                              # (data, model); -1 = the rest
  rules: tuple[tuple[str, tuple[str | None, ...]], ...]   # (leaf-path regex, partition spec)


@dataclasses.dataclass(frozen=True)
class LotterySettings:
  levels: int                      # pruning levels after the dense level 0
  prune_fraction: float            # of the remaining weights, per level
  rewind: str                      # 'init', 'step' (to rewind_step), 'lr' (keep weights, replay lr), 'none'
  rewind_step: int
  controls: tuple[str, ...]        # 'reinit', 'random_prune', 'oneshot'
  control_levels: tuple[int, ...]  # levels that get the controls; () = all
  replicates: int


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
  init_from: str         # a sparsejax workdir or checkpoint, or a .npz / .safetensors file
  method: str            # 'masked', 'row', 'lora', 'unstructured', 'full'
  targets: str           # regex: the weight matrices the PEFT methods adapt
  head: str              # regex: params trained in full by every method (a new head)
  rows: int              # row method: rows (output neurons) per target matrix
  rank: int              # lora: rank per target matrix
  alpha: float           # lora: scale alpha / rank; 0 means alpha = rank
  budget: str            # row method: 'per_layer' (rows each) or 'global' (rows x layers)
  row_score: str         # 'l2', 'taylor', 'random', 'activation'
  score_batches: int     # batches for the taylor / activation scores and gradient selection
  select: str            # unstructured: 'delta' (LT-SFT) or 'gradient'
  dense_steps: int       # unstructured 'delta': steps of the dense phase
  trainable: int         # unstructured: trainable weights; 0 = the row method's count


FINETUNE_METHODS = ('masked', 'row', 'lora', 'unstructured', 'full')
ROW_SCORES = ('l2', 'taylor', 'random', 'activation')
REWINDS = ('init', 'step', 'lr', 'none')
CONTROLS = ('reinit', 'random_prune', 'oneshot')


@dataclasses.dataclass(frozen=True)
class Settings:
  seed: int
  data: DataSettings
  model: ModelSettings
  optimizer: OptimizerSettings
  pruning: PruningSettings
  train: TrainSettings
  mesh: MeshSettings
  lottery: LotterySettings
  finetune: FinetuneSettings
