"""Result rows: one JSON line per finished training run, read by `report`.

A row names the run (replicate, seed, level, arm, swept setting) and carries
its final metrics, the eval curve, the early-stopping point (the eval step
with the lowest validation loss, as in Frankle & Carbin 2019), the final
per-layer density and the run's FLOPs relative to dense (training and
inference, counted as the RigL paper counts them: `sparsejax.core.flops`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from sparsejax.train import metrics as metrics_lib
from sparsejax.train.weights import final_weights, named_weights  # noqa: F401  (re-exported)


FLOPS_KEYS = ('train_ratio', 'inference_ratio', 'train_total', 'train_dense_equivalent',
              'inference_sparse', 'inference_dense')


def run_row(workdir, **ids: Any) -> dict:
  """The result row of a finished run in `workdir` (it must hold summary.json)."""
  workdir = pathlib.Path(workdir)
  summary = json.loads((workdir / 'summary.json').read_text())
  evals = [r for r in metrics_lib.read_rows(workdir / 'metrics.jsonl') if r['kind'] == 'eval']
  curve = [[r['step'], {k: v for k, v in r.items()
                        if k.endswith(('_accuracy', '_loss'))}] for r in evals]
  final = {f'{split}_{k}': v for split, e in summary['eval'].items()
           for k, v in e.items() if k in ('accuracy', 'loss')}
  early = None
  with_val = [(s, m) for s, m in curve if 'validation_loss' in m]
  if with_val:
    step, m = min(with_val, key=lambda sm: (sm[1]['validation_loss'], sm[0]))
    early = {'step': step, 'validation_loss': m['validation_loss'],
             **({'test_accuracy': m['test_accuracy']} if 'test_accuracy' in m else {})}
  row = {**ids, 'density': summary['density'], 'final': final, 'early_stop': early,
         'curve': curve, 'layer_density': summary.get('layer_density', {}),
         'status': 'ok', 'workdir': str(workdir)}
  if summary.get('flops'):   # the totals; the per-layer split stays in summary.json
    row['flops'] = {k: summary['flops'][k] for k in FLOPS_KEYS if k in summary['flops']}
  return row


def failed_row(error: str, **ids: Any) -> dict:
  return {**ids, 'status': 'failed', 'error': error}


def write_rows(path, rows) -> None:
  """Writes all rows at once, atomically."""
  path = pathlib.Path(path)
  tmp = path.with_suffix('.jsonl.tmp')
  tmp.write_text(''.join(json.dumps(r, default=_plain) + '\n' for r in rows))
  tmp.replace(path)


def save_row(workdir, row: dict) -> pathlib.Path:
  """Writes a fine-tuning run's row to workdir/row.json (what `sparsejax
  finetune` leaves for a sweep to add its 'peft' and 'after_pruning' to the
  run's row); returns the path."""
  path = pathlib.Path(workdir) / 'row.json'
  path.write_text(json.dumps(row, default=float) + '\n')
  return path


def _plain(x):
  if isinstance(x, np.generic):
    return x.item()
  raise TypeError(f'cannot write {type(x).__name__} to JSON')
