"""Result rows -> markdown tables and CSV (the rows are read and grouped in
`result_rows`, plots are in `plots`, the whole report in `report`).

Programs append one JSON row per finished run to `results.jsonl` in their
run directory (`result_rows` reads them). This module turns those rows into
markdown tables (per lottery level, per sweep group, fine-tuning costs) and
a CSV. It is host-side only (numpy, no JAX), so a report can be made on a
laptop from copied run directories.
"""

from __future__ import annotations

import csv
import pathlib
from typing import Sequence

import numpy as np

from sparsejax.programs.flops_columns import (FLOPS_COLUMNS, FLOPS_NOTE, flops_cells,
                                              flops_means, has_flops)
from sparsejax.programs.result_rows import (  # noqa: F401  (re-exported: report, plots, scripts)
    AFTER_PRUNING_PREFIX, EARLY_STOP_PREFIX, Row, _arms, _stats, failed, group_rows, is_percent,
    load_results, metric_value, seed_keys)


# ------------------------------------------------------------- formatting

def format_stats(values: Sequence[float], percent: bool = False, decimals: int | None = None
                 ) -> str:
  """'mean ± std (n=k)', just 'value (n=1)' for one value, '-' for none."""
  n, mean, std = _stats(values)
  if n == 0:
    return '-'
  scale = 100.0 if percent else 1.0
  d = decimals if decimals is not None else (2 if percent else 4)
  if n == 1:
    return f'{mean * scale:.{d}f} (n=1)'
  return f'{mean * scale:.{d}f} ± {std * scale:.{d}f} (n={n})'


def _error(row: Row, width: int = 100) -> str:
  lines = str(row.get('error') or 'no error message').strip().splitlines() or ['']
  text = lines[0]
  return text if len(text) <= width else text[:width - 3] + '...'


def _markdown(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
  """A markdown table padded so that it also reads well as plain text."""
  cells = [[str(c).replace('|', '\\|') for c in r] for r in [header, *body]]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  line = lambda r: '| ' + ' | '.join(c.ljust(w) for c, w in zip(r, widths)) + ' |'
  sep = '|' + '|'.join('-' * (w + 2) for w in widths) + '|'
  return '\n'.join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def _note(metric: str) -> str:
  unit = 'in percent; ' if is_percent(metric) else ''
  return (f'{metric} {unit}mean ± sample std (ddof=1) over replicates; '
          'n counts finished runs.')


# ------------------------------------------------------------- level table

def level_table(rows: Sequence[Row], metric: str = 'test_accuracy',
                arms: Sequence[str] | None = None) -> str:
  """Markdown table of lottery results: one line per IMP level.

  Columns: level, % weights remaining (mean density of the first arm's
  finished runs), `<arm> <metric>` per arm, and the first arm's early-stop
  iteration (when the runs recorded one: a validation split). Failed runs are listed below the table, not averaged.
  """
  leveled = [r for r in rows if r.get('level') is not None]
  if not leveled:
    raise ValueError('no rows with a level: use summary_table for non-lottery results')
  arms = list(arms) if arms is not None else _arms(leveled)
  percent = is_percent(metric)
  ok = [r for r in leveled if not failed(r)]
  # early stopping needs a validation split: without one the column would be all '-'
  early = any((r.get('early_stop') or {}).get('step') is not None for r in ok)
  flops = has_flops(ok)
  header = ['level', '% weights remaining', *(f'{a} {metric}' for a in arms),
            *([f'early-stop iter ({arms[0]})'] if early else []),
            *([f'{name} ({arms[0]})' for name, _ in FLOPS_COLUMNS] if flops else [])]
  body = []
  for level in sorted({r['level'] for r in leveled}):
    at = [r for r in ok if r['level'] == level]
    ref = [r for r in at if r.get('arm') == arms[0]] or at
    ref = ref or [r for r in leveled if r['level'] == level]   # all failed: planned density
    dens = [r['density'] for r in ref if r.get('density') is not None]
    line = [str(level), f'{100 * np.mean(dens):.1f}' if dens else '-']
    for a in arms:
      vals = [metric_value(r, metric) for r in at if r.get('arm') == a]
      line.append(format_stats([v for v in vals if v is not None], percent))
    steps = [r['early_stop']['step'] for r in at if r.get('arm') == arms[0]
             and (r.get('early_stop') or {}).get('step') is not None]
    if early:
      line.append(format_stats(steps, decimals=0))
    if flops:
      line += flops_cells(r for r in at if r.get('arm') == arms[0])
    body.append(line)
  text = _markdown(header, body) + '\n\n' + _note(metric) + (FLOPS_NOTE if flops else '')
  bad = [r for r in leveled if failed(r)]
  if bad:
    text += '\n\n' + '\n'.join(
        f"failed: replicate {r.get('replicate', '?')}, level {r['level']}, "
        f"arm {r.get('arm', '?')}: {_error(r)}" for r in bad)
  return text


# ------------------------------------------------------------ sweep tables

def _group_stats(members: Sequence[Row], metric: str):
  ok_vals = [metric_value(r, metric) for r in members if not failed(r)]
  return [v for v in ok_vals if v is not None], [r for r in members if failed(r)]


def summary_table(rows: Sequence[Row], group_by: Sequence[str] = ('arm', 'setting'),
                  metric: str = 'test_accuracy') -> str:
  """Markdown table for sweeps: mean ± std (n) of `metric` per group."""
  names, groups = group_rows(rows, group_by)
  percent = is_percent(metric)
  flops = has_flops(rows)
  body = []
  for key, members in groups:
    vals, bad = _group_stats(members, metric)
    cell = format_stats(vals, percent) if vals or not bad else ''
    if bad:
      note = f'failed ({len(bad)} of {len(members)}): {_error(bad[0], 60)}'
      cell = f'{cell}; {note}' if cell else note
    body.append(['-' if v is None else str(v) for v in key] + [cell]
                + (flops_cells(members) if flops else []))
  header = [*names, metric, *([name for name, _ in FLOPS_COLUMNS] if flops else [])]
  return _markdown(header, body) + '\n\n' + _note(metric) + (FLOPS_NOTE if flops else '')


def write_csv(rows: Sequence[Row], path, group_by: Sequence[str] = ('arm', 'setting'),
              metric: str = 'test_accuracy') -> pathlib.Path:
  """CSV with columns group..., n, mean, std, n_failed, density (and
  train_flops_ratio, inference_flops_ratio where runs recorded FLOPs).

  Values are as recorded (accuracies as fractions, not percent); std is
  empty for n < 2, density and the FLOPs ratios are means over the group's
  finished runs.
  """
  names, groups = group_rows(rows, group_by)
  flops = has_flops(rows)
  path = pathlib.Path(path)
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow([*names, 'n', 'mean', 'std', 'n_failed', 'density',
                *(['train_flops_ratio', 'inference_flops_ratio'] if flops else [])])
    for key, members in groups:
      vals, bad = _group_stats(members, metric)
      n, mean, std = _stats(vals)
      dens = [r['density'] for r in members if not failed(r) and r.get('density') is not None]
      w.writerow(['' if v is None else v for v in key]
                 + [n, repr(mean) if n else '', repr(std) if n > 1 else '', len(bad),
                    repr(float(np.mean(dens))) if dens else '']
                 + (['' if v is None else repr(v) for v in flops_means(members)] if flops
                    else []))
  return path


# ------------------------------------------------------ fine-tuning costs

MIB = 2.0 ** 20
COST_COLUMNS = (   # (header, row['peft'] key or a function of it, scale, decimals)
    ('trainable params', 'trainable_params', 1.0, 0),
    ('grads+opt+idx MiB',
     lambda p: p['bytes_grads'] + p['bytes_opt_state'] + p.get('bytes_indices', 0), 1 / MIB, 3),
    ('total MiB', 'bytes_total', 1 / MIB, 2),
    ('peak RSS MiB', 'peak_rss_mb', 1.0, 0),
    ('ms/step', 'ms_per_step', 1.0, 2),
)


def _cost(peft: dict, key) -> float:
  return float(key(peft) if callable(key) else peft[key])


def cost_table(rows: Sequence[Row], metric: str = 'test_accuracy') -> str:
  """Markdown table for parameter-efficient fine-tuning: per (arm, setting),
  `metric` as mean ± std and the cost columns of row['peft'] as means.

  'grads+opt+idx' is the training state (gradients, optimizer state, int32
  row or entry indices); 'total' adds the parameters, frozen ones included.
  Peak RSS is the process's high-water mark, which includes the data and the
  compiled programs, so compare it across arms of one sweep only.
  """
  with_cost = [r for r in rows if not failed(r) and r.get('peft')]
  if not with_cost:
    raise ValueError('no finished rows with fine-tuning costs (row["peft"])')
  names, groups = group_rows(with_cost)
  body = []
  for key, members in groups:
    vals = [v for v in (metric_value(r, metric) for r in members) if v is not None]
    line = ['-' if v is None else str(v) for v in key] + [format_stats(vals, is_percent(metric))]
    for _, field, scale, decimals in COST_COLUMNS:
      line.append(f'{np.mean([_cost(r["peft"], field) for r in members]) * scale:.{decimals}f}')
    body.append(line)
  header = [*names, metric, *(c[0] for c in COST_COLUMNS)]
  return (_markdown(header, body) + '\n\n' + _note(metric)
          + ' Cost columns: means over the replicates; grads+opt+idx: gradients, optimizer'
          ' state and int32 indices; total: that plus all parameters, frozen ones included.')
