"""PNG plots of result rows: accuracy against weights remaining and against
training FLOPs, accuracy against iteration, per-layer density, mask-update
dynamics.

Figures are drawn on `matplotlib.figure.Figure` objects, never through
pyplot: the PNG is rendered by the Agg canvas whatever backend the caller's
process uses, no window opens, and a notebook's backend is left untouched.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import numpy as np

from sparsejax.programs.flops_columns import flops_value
from sparsejax.programs.tables import (Row, _arms, _stats, failed, is_percent, seed_keys,
                                       metric_value)

def _figure(width=6.4, height=4.4):
  from matplotlib.figure import Figure   # imported here: keeps `import report` cheap
  fig = Figure(figsize=(width, height), layout='constrained')
  return fig, fig.add_subplot()


MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*', '<', '>')
DASHES = ('-', '--', ':', '-.')


def _style(i: int) -> dict:
  """Line i's colour, marker and dash, so that lines stay apart without
  colour (in print, for colour-blind readers): the first ten differ in all
  three but the dash."""
  return {'color': f'C{i % 10}', 'marker': MARKERS[i % len(MARKERS)],
          'ls': DASHES[i % len(DASHES)]}


def _save(fig, path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, format='png', dpi=120)
  return path


def _ylabel(metric: str) -> str:
  return f'{metric} (%)' if is_percent(metric) else metric


def _point_key(row: Row, ignore: frozenset = frozenset()):
  """Replicates of one point: same level, else same setting (less the keys
  in `ignore`, which restate the seed), else same density."""
  if row.get('level') is not None:
    return ('level', row['level'])
  if row.get('setting'):
    setting = {k: v for k, v in row['setting'].items() if k not in ignore}
    return ('setting', json.dumps(setting, sort_keys=True))
  return ('density', round(float(row['density']), 4))


def _arm_points(rows: Sequence[Row], arm: str, metric: str, ignore, keep=lambda r: True
                ) -> dict[Any, list[Row]]:
  """{point key: rows} of `arm`'s finished rows that have a density, a value
  of `metric` and pass `keep`: one plotted point per setting or level, its
  replicates together."""
  points: dict[Any, list[Row]] = {}
  for r in rows:
    if (str(r.get('arm', '?')) == arm and not failed(r) and r.get('density') is not None
        and metric_value(r, metric) is not None and keep(r)):
      points.setdefault(_point_key(r, ignore), []).append(r)
  return points


def plot_accuracy_vs_density(rows: Sequence[Row], path, metric: str = 'test_accuracy',
                             title: str | None = None) -> pathlib.Path:
  """Metric against % weights remaining (log axis, 100 at the left), per arm.

  Lines join the mean over replicates at each point; the band is ±1 sample
  std where a point has two or more replicates. An arm with a single point
  (a dense baseline) is drawn as a dashed horizontal line.
  """
  from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator
  scale = 100.0 if is_percent(metric) else 1.0
  fig, ax = _figure()
  xs_all = []
  ignore = frozenset(seed_keys(rows))
  for i, arm in enumerate(_arms(rows)):
    points = _arm_points(rows, arm, metric, ignore)
    if not points:
      continue
    stats = sorted((100 * np.mean([r['density'] for r in p]),
                    *_stats([metric_value(r, metric) for r in p])) for p in points.values())
    x, n, mean, std = (np.array(c, dtype=float) for c in zip(*stats))
    style = _style(i)
    color = style['color']
    counts = f'{int(n.min())}-{int(n.max())}' if n.min() != n.max() else f'{int(n.max())}'
    label = f'{arm} (n={counts})'
    if len(x) == 1:
      ax.axhline(mean[0] * scale, color=color, ls='--', lw=1, label=label)
    ax.plot(x, mean * scale, ms=4, label=None if len(x) == 1 else label, **style)
    has = n > 1
    if has.any() and len(x) > 1:
      lo, hi = (mean - np.where(has, std, 0)) * scale, (mean + np.where(has, std, 0)) * scale
      ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
    xs_all.extend(x)
  if not xs_all:
    raise ValueError(f'nothing to plot: no finished rows with a density and {metric!r}')
  ax.set_xscale('log')
  ticks = np.unique(np.round(xs_all, 3))[::-1]
  ticks = ticks[np.unique(np.linspace(0, len(ticks) - 1, min(len(ticks), 10)).round().astype(int))]
  ax.xaxis.set_major_locator(FixedLocator(ticks))
  ax.set_xticklabels([f'{t:.3g}' for t in ticks])
  ax.xaxis.set_minor_locator(NullLocator())
  ax.xaxis.set_minor_formatter(NullFormatter())
  lo, hi = min(xs_all), max(xs_all)
  ax.set_xlim(hi * 1.15, lo / 1.15)     # decreasing: dense at the left
  ax.set_xlabel('% of weights remaining (log scale)')
  ax.set_ylabel(_ylabel(metric))
  ax.set_title(title or f'{metric} vs. weights remaining\n(mean over replicates, band: ±1 std)',
               fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def plot_accuracy_vs_train_flops(rows: Sequence[Row], path, metric: str = 'test_accuracy',
                                 title: str | None = None) -> pathlib.Path:
  """Metric against training FLOPs relative to a dense run (log axis), per arm.

  A point is a setting's (or level's) replicates: the mean of their FLOPs
  ratios and of the metric, with ±1 sample std bars where there are two or
  more; points of an arm are joined in order of FLOPs. The FLOPs are the
  rows' `flops.train_ratio` (RigL paper's counting, `sparsejax.core.flops`);
  the dotted line marks the cost of training the dense model once.
  """
  from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
  scale = 100.0 if is_percent(metric) else 1.0
  fig, ax = _figure()
  xs_all = []
  ignore = frozenset(seed_keys(rows))
  for i, arm in enumerate(_arms(rows)):
    points = _arm_points(rows, arm, metric, ignore, keep=lambda r: flops_value(r) is not None)
    if not points:
      continue
    stats = sorted((np.mean([flops_value(r) for r in p]),
                    *_stats([metric_value(r, metric) for r in p])) for p in points.values())
    x, n, mean, std = (np.array(c, dtype=float) for c in zip(*stats))
    counts = f'{int(n.min())}-{int(n.max())}' if n.min() != n.max() else f'{int(n.max())}'
    ax.errorbar(x, mean * scale, yerr=np.where(n > 1, std, 0) * scale, ms=4, capsize=2,
                label=f'{arm} (n={counts})', **_style(i))
    xs_all.extend(x)
  if not xs_all:
    raise ValueError(f'nothing to plot: no finished rows with training FLOPs and {metric!r}')
  ax.set_xscale('log')
  ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f'{v:g}'))
  ax.xaxis.set_minor_formatter(NullFormatter())
  ax.axvline(1.0, color='0.5', ls=':', lw=1)
  ax.set_xlabel('training FLOPs (x dense training, log scale)')
  ax.set_ylabel(_ylabel(metric))
  ax.set_title(title or f'{metric} vs. training FLOPs\n(mean over replicates, bars: ±1 std)',
               fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  return _save(fig, path)


def mean_curve(rows: Sequence[Row], metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, std) over the rows' curves at each eval step."""
  at: dict[int, list[float]] = {}
  for r in rows:
    for step, values in r.get('curve') or []:
      if values.get(metric) is not None:
        at.setdefault(int(step), []).append(float(values[metric]))
  steps = sorted(at)
  stats = [_stats(at[s]) for s in steps]
  return (np.array(steps), np.array([s[1] for s in stats]),
          np.array([s[2] if s[0] > 1 else 0.0 for s in stats]))


def plot_curves(rows: Sequence[Row], path, levels: Sequence[int], arm: str = 'ticket',
                metric: str = 'test_accuracy') -> pathlib.Path:
  """Metric against training iteration for the chosen levels of one arm.

  One line per level (mean over replicates at each eval step, ±1 std band),
  labelled with its % weights remaining.
  """
  scale = 100.0 if is_percent(metric) else 1.0
  fig, ax = _figure()
  drawn = 0
  for i, level in enumerate(levels):
    runs = [r for r in rows if r.get('level') == level and r.get('arm') == arm and not failed(r)]
    steps, mean, std = mean_curve(runs, metric)
    if not len(steps):
      continue
    dens = [r['density'] for r in runs if r.get('density') is not None]
    label = f'{100 * np.mean(dens):.1f}% (level {level})' if dens else f'level {level}'
    style = {**_style(i), 'marker': None}
    color = style['color']
    ax.plot(steps, mean * scale, lw=1.5, label=label, **style)
    if (std > 0).any():
      ax.fill_between(steps, (mean - std) * scale, (mean + std) * scale, color=color,
                      alpha=0.15, lw=0)
    drawn += 1
  if not drawn:
    raise ValueError(f'nothing to plot: no {arm!r} curves with {metric!r} at levels {list(levels)}')
  ax.set_xlabel('training iteration')
  ax.set_ylabel(_ylabel(metric))
  ax.set_title(f'{arm}: {metric} during training (mean over replicates, band: ±1 std)',
               fontsize=10)
  ax.grid(True, alpha=0.3)
  ax.legend(title='% weights remaining', fontsize=8, title_fontsize=8)
  return _save(fig, path)


def plot_layer_density(row: Row, path) -> pathlib.Path:
  """Bar chart of one run's per-layer density of the final mask (in percent)."""
  layers = row.get('layer_density') or {}
  if not layers:
    raise ValueError('this row records no layer_density')
  names, values = list(layers), [100 * float(v) for v in layers.values()]
  fig, ax = _figure(width=max(4.0, 0.5 * len(names) + 2), height=4.4)
  bars = ax.bar(range(len(names)), values, color='C0')
  ax.bar_label(bars, fmt='%.1f', fontsize=7)
  ax.set_xticks(range(len(names)))
  ax.set_xticklabels(names, rotation=45, ha='right', fontsize=8)
  if min(values) < 0.05 * max(values):   # linear bars of 1% beside 100% are invisible
    ax.set_yscale('log')
    ax.set_ylim(min(v for v in values if v > 0) / 2 if any(values) else 0.1, 150)
    ax.set_ylabel('% of weights remaining (log scale)')
  else:
    ax.set_ylim(0, 105)
    ax.set_ylabel('% of weights remaining')
  bits = [f"arm {row['arm']}" if 'arm' in row else '',
          f"level {row['level']}" if row.get('level') is not None else '',
          f"replicate {row['replicate']}" if 'replicate' in row else '',
          f"overall {100 * row['density']:.1f}%" if row.get('density') is not None else '']
  ax.set_title('per-layer density\n' + ', '.join(b for b in bits if b), fontsize=9)
  ax.grid(True, axis='y', alpha=0.3)
  return _save(fig, path)




def plot_mask_dynamics(rows: Sequence[Row], path, title: str | None = None) -> pathlib.Path:
  """Mask updates of one run: weights dropped and grown per update (top) and
  the new mask's overlap with the previous and the initial mask (bottom),
  against the training step. `rows` are the run's metrics.jsonl rows; only
  those of kind 'mask_update' are used."""
  from matplotlib.figure import Figure
  updates = sorted((r for r in rows if r.get('kind') == 'mask_update'), key=lambda r: r['step'])
  if not updates:
    raise ValueError("nothing to plot: no rows of kind 'mask_update'")
  steps = np.array([r['step'] for r in updates])

  def column(key):
    return np.array([float(r[key]) if r.get(key) is not None else np.nan for r in updates])

  fig = Figure(figsize=(6.4, 5.6), layout='constrained')
  top, bottom = fig.subplots(2, 1, sharex=True)
  for i, key in enumerate(('dropped', 'grown')):
    top.plot(steps, column(key), marker='o', ms=3, lw=1.2, color=f'C{i}', label=key)
  top.set_ylabel('weights per update')
  top.set_title(title or 'mask updates', fontsize=10)
  top.legend(fontsize=8)
  top.grid(True, alpha=0.3)
  for i, key in enumerate(('overlap_previous', 'overlap_initial')):
    bottom.plot(steps, column(key), marker='o', ms=3, lw=1.2, color=f'C{i + 2}',
                label=key.replace('_', ' with '))
  bottom.set_ylim(-0.02, 1.02)
  bottom.set_ylabel('share of active weights')
  bottom.set_xlabel('training iteration')
  bottom.legend(fontsize=8)
  bottom.grid(True, alpha=0.3)
  return _save(fig, path)
