"""Result rows, read and grouped: what the tables (`tables`) and the plots
(`plots`) of a report share.

Programs append one JSON row per finished run to `results.jsonl` in their
run directory (replicate, seed, level, arm, setting, density, final metrics,
early-stop point, eval curve, per-layer density, FLOPs, status; `results`
writes them). This module reads those files, picks a metric out of a row,
and groups rows by arm and swept setting, leaving out setting keys that only
restate the seed. Host-side only (numpy, no JAX). `tables` re-exports every
name here, so `tables.load_results` and the others work as before.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np

Row = dict[str, Any]
EARLY_STOP_PREFIX = 'early_stop_'
AFTER_PRUNING_PREFIX = 'after_pruning_'   # fine-tuning rows: the pruned model at step 0


# ----------------------------------------------------------------- loading

def load_results(dirs) -> list[Row]:
  """Rows of `results.jsonl` from each run directory (or the file itself). A
  directory without one reads those of its immediate subdirectories: the
  `sparsejax lottery` workdir holds its results in `lottery_<hash>/`."""
  if isinstance(dirs, (str, pathlib.Path)):
    dirs = [dirs]
  rows = []
  for d in dirs:
    p = pathlib.Path(d)
    paths = [p / 'results.jsonl'] if p.is_dir() else [p]
    if p.is_dir() and not paths[0].is_file():
      paths = sorted(p.glob('*/results.jsonl')) or paths
    for path in paths:
      if not path.is_file():
        looked = (f'{path} or {p}/*/results.jsonl' if p.is_dir() else
                  f'{p} or {p / "results.jsonl"}')
        raise ValueError(f'no results file: looked for {looked}')
      rows.extend(_read_rows(path))
  return rows


def _read_rows(path: pathlib.Path) -> list[Row]:
  """The JSON object rows of one results.jsonl."""
  rows = []
  with open(path) as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}, line {lineno}: malformed JSON ({e.msg})') from None
      if not isinstance(row, dict):
        raise ValueError(f'{path}, line {lineno}: expected a JSON object, '
                         f'got {type(row).__name__}')
      rows.append(row)
  return rows


# ------------------------------------------------------------ row helpers

def failed(row: Row) -> bool:
  return row.get('status', 'ok') != 'ok'


def is_percent(metric: str) -> bool:
  """Accuracies are stored as fractions and shown in percent."""
  return 'accuracy' in metric


def metric_value(row: Row, metric: str) -> float | None:
  """`row['final'][metric]`; `row['early_stop'][rest]` for `'early_stop_<rest>'`;
  `row['after_pruning'][rest]` (fine-tuning: before any update) for
  `'after_pruning_<rest>'`.

  None when the row does not record it; 'nan' strings (how the metrics
  writer stores non-finite numbers) become float NaN.
  """
  if metric.startswith(EARLY_STOP_PREFIX):
    source, key = row.get('early_stop') or {}, metric[len(EARLY_STOP_PREFIX):]
  elif metric.startswith(AFTER_PRUNING_PREFIX):
    source, key = row.get('after_pruning') or {}, metric[len(AFTER_PRUNING_PREFIX):]
  else:
    source, key = row.get('final') or {}, metric
  v = source.get(key)
  return None if v is None else float(v)


def _stats(values: Sequence[float]) -> tuple[int, float, float]:
  """(n, mean, sample std with ddof=1; NaN for n < 2)."""
  a = np.asarray(values, dtype=float)
  if a.size == 0:
    return 0, math.nan, math.nan
  return a.size, float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else math.nan


def _arms(rows: Iterable[Row]) -> list[str]:
  """Arms in order of first appearance, 'ticket' first when present."""
  seen = list(dict.fromkeys(str(r.get('arm', '?')) for r in rows))
  return sorted(seen, key=lambda a: a != 'ticket')


# ---------------------------------------------------------------- grouping

def _value_key(v):
  """Sorts None, numbers and strings together without TypeError."""
  if v is None:
    return (0, 0, '')
  if isinstance(v, (int, float)) and not isinstance(v, bool):
    return (1, v, '')
  return (2, 0, str(v))


def _scalar(v):
  return v if v is None or isinstance(v, (int, float, str, bool)) else json.dumps(v, sort_keys=True)


def seed_keys(rows: Sequence[Row]) -> set[str]:
  """Setting keys that only restate the seed (one value per seed and back,
  such as a per-seed `finetune.init_from`): grouping by them would split the
  replicates the table averages over."""
  out = set()
  for k in {k for r in rows for k in (r.get('setting') or {})}:
    pairs = {(r.get('seed'), _scalar(r['setting'][k])) for r in rows
             if k in (r.get('setting') or {})}
    seeds, values = {s for s, _ in pairs}, {v for _, v in pairs}
    if len(seeds) > 1 and len(pairs) == len(seeds) == len(values):
      out.add(k)
  return out


def _group_columns(rows: Sequence[Row], group_by: Sequence[str]) -> list[tuple[str, str]]:
  """(field, column name) pairs; 'setting' expands into its sorted keys,
  leaving out those that only restate the seed."""
  cols = []
  for field in group_by:
    if field == 'setting':
      keys = sorted({k for r in rows for k in (r.get('setting') or {})} - seed_keys(rows))
      cols += [(f'setting.{k}', k if k not in group_by else f'setting.{k}') for k in keys]
    else:
      cols.append((field, field))
  return cols


def _get(row: Row, field: str):
  if field.startswith('setting.'):
    return _scalar((row.get('setting') or {}).get(field[len('setting.'):]))
  return _scalar(row.get(field))


def group_rows(rows: Sequence[Row], group_by: Sequence[str] = ('arm', 'setting')
               ) -> tuple[list[str], list[tuple[tuple, list[Row]]]]:
  """(column names, sorted [(key, rows)]) for the given grouping fields."""
  cols = _group_columns(rows, group_by)
  groups: dict[tuple, list[Row]] = {}
  for r in rows:
    groups.setdefault(tuple(_get(r, f) for f, _ in cols), []).append(r)
  order = sorted(groups, key=lambda k: tuple(_value_key(v) for v in k))
  return [name for _, name in cols], [(k, groups[k]) for k in order]
