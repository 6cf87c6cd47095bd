"""The report of a program's runs: tables, CSV and plots in one call.

`sparsejax report DIR...` calls `report`; the pieces live in `tables`
(loading rows, markdown and CSV) and `plots` (PNG figures).
"""

from __future__ import annotations

import json
import pathlib
from typing import Sequence

import numpy as np

from sparsejax.programs.plots import (mean_curve, plot_accuracy_vs_density,
                                      plot_accuracy_vs_train_flops, plot_curves,
                                      plot_layer_density, plot_mask_dynamics)
from sparsejax.programs.flops_columns import has_flops
from sparsejax.programs.tables import (EARLY_STOP_PREFIX, Row, _arms, cost_table, failed,
                                       format_stats,
                                       group_rows, is_percent, level_table, load_results,
                                       metric_value, summary_table, write_csv)

SPREAD_LEVELS = 4   # levels drawn in the report's curves plot
MAX_MASK_PLOTS = 8  # runs whose mask-update dynamics the report draws

__all__ = ['cost_table', 'format_stats', 'group_rows', 'is_percent', 'level_table', 'load_results',
           'mask_update_rows', 'mean_curve', 'metric_value', 'plot_accuracy_vs_density',
           'plot_accuracy_vs_train_flops',
           'plot_curves', 'plot_layer_density', 'plot_mask_dynamics', 'report', 'spread', 'summary_table', 'write_csv', 'Row']


def spread(values: Sequence, k: int = SPREAD_LEVELS) -> list:
  """Up to k items spread evenly over a sorted sequence, ends included."""
  values = list(values)
  if len(values) <= k:
    return values
  return [values[i] for i in sorted(set(np.linspace(0, len(values) - 1, k).round().astype(int)))]


def mask_update_rows(workdir) -> list[dict]:
  """The rows of kind 'mask_update' in `workdir`/metrics.jsonl ([] if none or
  no such file); a line cut short by a kill ends the read."""
  path = pathlib.Path(workdir) / 'metrics.jsonl'
  if not path.is_file():
    return []
  rows = []
  with open(path) as f:
    for line in f:
      if 'mask_update' not in line:    # cheap skip of the per-step rows
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        break
      if isinstance(row, dict) and row.get('kind') == 'mask_update':
        rows.append(row)
  return rows


def _mask_figures(rows, out: pathlib.Path) -> list[pathlib.Path]:
  """mask_dynamics_<n>.png for the first MAX_MASK_PLOTS runs whose workdir
  (if still present) recorded mask updates."""
  figures, seen = [], set()
  for r in rows:
    workdir = r.get('workdir')
    if failed(r) or not workdir or workdir in seen:
      continue
    seen.add(workdir)
    updates = mask_update_rows(workdir)
    if not updates:
      continue
    bits = [f'{k} {r[k]}' for k in ('arm', 'level', 'replicate') if r.get(k) is not None]
    title = 'mask updates: ' + (', '.join(bits) if bits else pathlib.Path(workdir).name)
    figures.append(plot_mask_dynamics(updates, out / f'mask_dynamics_{len(figures)}.png', title))
    if len(figures) >= MAX_MASK_PLOTS:
      break
  return figures


def report(dirs, out_dir=None, metric: str = 'test_accuracy') -> str:
  """Tables and plots for the runs under `dirs`, written to `out_dir`.

  Writes report.md, report.csv, accuracy_vs_density.png,
  accuracy_vs_train_flops.png (when the runs recorded FLOPs), curves.png (up to
  four levels spread over the range, when curves exist) and
  layer_density.png (the sparsest finished run of the first arm, when
  recorded) and mask_dynamics_<n>.png for up to MAX_MASK_PLOTS runs whose
  workdir's metrics.jsonl holds mask_update rows. Returns the table text followed by the list of files written.
  """
  dirs = [dirs] if isinstance(dirs, (str, pathlib.Path)) else list(dirs)
  rows = load_results(dirs)
  if not rows:
    raise ValueError(f'no result rows in {[str(d) for d in dirs]}')
  first = pathlib.Path(dirs[0])
  out = pathlib.Path(out_dir) if out_dir is not None else (
      first if first.is_dir() else first.parent)
  out.mkdir(parents=True, exist_ok=True)
  leveled = [r for r in rows if r.get('level') is not None]
  if leveled:
    text = level_table(rows, metric)
    others = [r for r in rows if r.get('level') is None]
    if others:
      text += '\n\nRuns without a level:\n\n' + summary_table(others, metric=metric)
    group_by = ('level', 'arm', 'setting')
  else:
    text = summary_table(rows, metric=metric)
    group_by = ('arm', 'setting')
  if any(r.get('peft') and not failed(r) for r in rows):
    text += '\n\nFine-tuning costs:\n\n' + cost_table(rows, metric)
  written = [write_csv(rows, out / 'report.csv', group_by=group_by, metric=metric)]
  figures = []
  try:
    figures.append(plot_accuracy_vs_density(rows, out / 'accuracy_vs_density.png', metric))
  except ValueError:
    pass    # no densities or no values for this metric: the table says so
  if has_flops(rows):
    try:
      figures.append(plot_accuracy_vs_train_flops(rows, out / 'accuracy_vs_train_flops.png',
                                                  metric))
    except ValueError:
      pass
  ok = [r for r in leveled if not failed(r)]
  arms = _arms(ok)
  if arms:
    curve_metric = metric.removeprefix(EARLY_STOP_PREFIX)   # curves hold plain metric names
    with_curve = [r for r in ok
                  if r.get('arm') == arms[0] and len(mean_curve([r], curve_metric)[0])]
    if with_curve:
      levels = spread(sorted({r['level'] for r in with_curve}))
      figures.append(plot_curves(rows, out / 'curves.png', levels, arms[0], curve_metric))
  with_layers = [r for r in rows if not failed(r) and r.get('layer_density')
                 and r.get('density') is not None]
  if with_layers:
    top = _arms(with_layers)[0]
    sparsest = min((r for r in with_layers if r.get('arm') == top), key=lambda r: r['density'])
    figures.append(plot_layer_density(sparsest, out / 'layer_density.png'))
  figures += _mask_figures(rows, out)
  md = out / 'report.md'
  sources = ', '.join(f'`{d}`' for d in dirs)
  images = ''.join(f'\n\n![{p.stem}]({p.name})' for p in figures)
  md.write_text(f'# Results\n\nFrom {sources} ({len(rows)} rows).\n\n{text}{images}\n')
  written = [md, *written, *figures]
  return text + '\n\nFiles written:\n' + '\n'.join(f'- {p}' for p in written)
