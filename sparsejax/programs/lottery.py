"""The lottery program: iterative magnitude pruning as levels, with controls.

Level 0 trains the dense network. Level L prunes `prune_fraction` of the
weights that level L-1 kept, by magnitude of its final weights (per-layer
rates from the allocation's scales and overrides, or one global threshold),
rewinds and trains again with the mask fixed and a fresh optimizer (Frankle
& Carbin 2019). Rewinding: to the initial weights ('init'), to the weights at
step k of level 0 ('step', Frankle et al. 2020), learning-rate rewinding
('lr': keep the final weights, replay the schedule; Renda et al. 2020) or
plain fine-tuning ('none': keep the final weights at the schedule's final
learning rate).

Controls off a level, sharing its per-layer sparsities: 'reinit' (the
ticket's mask, fresh random initial weights), 'random_prune' (a random mask,
the rewind weights) and 'oneshot' (the level-0 dense weights pruned once by
magnitude, the rewind weights). Replicates repeat everything with seeds
seed, seed+1, ...

Every training run is an ordinary `train_and_evaluate` workdir, so it
resumes exactly; a level whose summary exists is skipped. The run directory
is named by a hash of the settings that change results, leaving out defaults
and the keys that only add work (levels, replicates, controls), so a longer
run extends a shorter one in place.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Callable

import jax

from sparsejax import config as config_lib
from sparsejax.core import allocation as alloc_lib
from sparsejax.core import criteria, imp, masks as masks_lib
from sparsejax.programs import results as results_lib
from sparsejax.train import builders, loop

EXTENT_KEYS = ('lottery.levels', 'lottery.replicates', 'lottery.controls',
               'lottery.control_levels')


def run_dir(config, workdir) -> pathlib.Path:
  """workdir/lottery_<hash of the result-changing settings>."""
  plain = config_lib.changed_keys(
      config_lib._merge(config_lib.default_config().to_dict(), config_lib._plain(config)),
      config_lib._plain(config_lib.default_config()))
  keep = {k: v for k, v in plain.items() if k not in EXTENT_KEYS + loop.NO_EFFECT_KEYS}
  digest = hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode())
  return pathlib.Path(workdir).absolute() / f'lottery_{digest.hexdigest()[:10]}'


def _level_config(config, seed: int, level: int, rewind: str, lr_fn, steps: int):
  over = {'seed': seed, 'sparsity': 0.0,
          'pruning.schedule': 'dense' if level == 0 else 'fixed'}
  if level > 0 and rewind == 'none':   # fine-tuning at the schedule's last learning rate
    over.update({'optimizer.schedule': 'constant', 'optimizer.warmup_steps': 0,
                 'optimizer.learning_rate': float(lr_fn(steps))})
  return config_lib.apply_overrides(config, over)


def _masked(params, masks):
  return jax.device_get(masks_lib.apply_masks(params, masks))


def run_lottery(config, workdir, *, progress: bool = False,
                log: Callable[[str], None] = print) -> list[dict]:
  """Runs (or resumes) all levels, controls and replicates; returns the rows."""
  settings = config_lib.to_settings(config)
  lot, p = settings.lottery, settings.pruning
  root = run_dir(config, workdir)
  root.mkdir(parents=True, exist_ok=True)
  (root / 'lottery.json').write_text(config_lib.to_json(config) + '\n')
  allocation = alloc_lib.Allocation(p.allocation, overrides=p.overrides, scales=p.scales)
  _, lr_fn = builders.build_optimizer(settings.optimizer, settings.train.steps)
  snapshots = (lot.rewind_step,) if lot.rewind == 'step' else ()
  rows = []
  log(f'lottery run {root}')
  for r in range(lot.replicates):
    seed = settings.seed + r
    rep = root / f'replicate_{r}'
    ids = {'replicate': r, 'seed': seed}

    def train(level, arm, start=None):
      workdir = rep / f'level_{level}' / arm
      cfg = _level_config(config, seed, level, lot.rewind, lr_fn, settings.train.steps)
      if not (workdir / 'summary.json').exists():
        loop.train_and_evaluate(cfg, workdir, progress=progress, start=start,
                                snapshots=snapshots if level == 0 else ())
      row = results_lib.run_row(workdir, **ids, level=level, arm=arm)
      rows.append(row)
      log(f'  replicate {r} level {level:2d} {arm:12s} {100 * row["density"]:6.2f}% '
          f'weights, test acc {row["final"].get("test_accuracy", float("nan")):.4f}')
      return workdir

    dense_dir = train(0, 'ticket')
    init_params, init_state = results_lib.named_weights(dense_dir, 'init')
    if lot.rewind == 'step':
      rewind_params, rewind_state = results_lib.named_weights(dense_dir,
                                                              f'step_{lot.rewind_step}')
    else:
      rewind_params, rewind_state = init_params, init_state
    dense_final, _, _ = results_lib.final_weights(dense_dir)
    prev_dir = dense_dir
    for level in range(1, lot.levels + 1):
      final, final_state, prev_masks = results_lib.final_weights(prev_dir)
      masks = jax.device_get(imp.prune_remaining(final, prev_masks, lot.prune_fraction,
                                                 allocation=allocation))
      if lot.rewind in ('init', 'step'):
        start = loop.Start(_masked(rewind_params, masks), masks, rewind_state)
      else:
        start = loop.Start(_masked(final, masks), masks, final_state)
      ticket_dir = train(level, 'ticket', start)
      if not lot.control_levels or level in lot.control_levels:
        key = jax.random.fold_in(jax.random.key(seed), 1000 + level)
        for arm in lot.controls:
          if arm == 'reinit':
            fresh = _fresh_params(settings, config, seed, level)
            train(level, arm, loop.Start(_masked(fresh, masks), masks, rewind_state))
          elif arm == 'random_prune':
            scores = criteria.random(rewind_params, None, key)
            m = jax.device_get(imp.same_counts(scores, masks))
            train(level, arm, loop.Start(_masked(rewind_params, m), m, rewind_state))
          elif arm == 'oneshot':
            m = jax.device_get(imp.same_counts(criteria.magnitude(dense_final), masks))
            train(level, arm, loop.Start(_masked(rewind_params, m), m, rewind_state))
      prev_dir = ticket_dir
  results_lib.write_rows(root / 'results.jsonl', rows)
  return rows


def _fresh_params(settings, config, seed: int, level: int):
  """New random initial weights for the 'reinit' control (a seed of its own)."""
  cfg = config_lib.to_settings(config_lib.apply_overrides(
      config, {'seed': seed, 'pruning.schedule': 'dense', 'sparsity': 0.0}))
  run = loop.build(cfg)
  key = jax.random.fold_in(jax.random.key(seed), 2_000_000 + level)
  state = jax.jit(run.init_state)(key)
  return jax.device_get(state.params)

