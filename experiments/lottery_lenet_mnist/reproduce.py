"""Claims of the LeNet-300-100 lottery at the paper's 50k iterations (Frankle
& Carbin 2019, figures 3 and 4): test accuracy and iteration at the
early-stopping point (minimum validation loss, evaluated every 100
iterations), tickets against the dense network and against random
re-initialisation, over the seeds in LOTTERY (one command each).

The claims L1-L5 are claims.md's, fixed before seeds 1-4 ran: means over
seeds, differences paired by seed with a 95% Student-t interval over the
per-seed differences. With fewer than 2 seeds the intervals are missing and
the claims that need one cannot pass."""

import math
import statistics

from sparsejax.reproduce import Claim

LOTTERY = [f'config_50k.py:{seed}' for seed in range(5)]
METRIC = 'early_stop_test_accuracy'
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447}   # by n - 1


def _at(rows, arm, level, key):
  return [r['early_stop'][key] for r in rows if r['arm'] == arm and r['level'] == level]


def _mean(values):
  return statistics.mean(values) if values else float('nan')


def _density(rows, level):
  return 100 * _mean([r['density'] for r in rows if r['level'] == level])


def _nearest(rows, percent):
  levels = sorted({r['level'] for r in rows})
  return min(levels, key=lambda lv: abs(_density(rows, lv) - percent))


def _by_seed(rows, arm, level, key):
  return {r['seed']: r['early_stop'][key] for r in rows
          if r['arm'] == arm and r['level'] == level}


def _paired(rows, arm, level, other, other_level):
  """Per-seed differences (points) arm@level - other@other_level, on shared seeds."""
  a, b = _by_seed(rows, arm, level, 'test_accuracy'), _by_seed(rows, other, other_level,
                                                               'test_accuracy')
  return [100 * (a[s] - b[s]) for s in sorted(set(a) & set(b))]


def _interval(diffs):
  """(mean, low, high) with the 95% t interval; low/high None under 2 values."""
  if not diffs:
    return float('nan'), None, None
  m = statistics.mean(diffs)
  if len(diffs) < 2:
    return m, None, None
  half = T975[len(diffs) - 1] * statistics.stdev(diffs) / math.sqrt(len(diffs))
  return m, m - half, m + half


def _show(mean, low, high, n):
  ci = 'no interval' if low is None else f'95% CI {low:+.2f} to {high:+.2f}'
  return f'{mean:+.2f} ({ci}; n={n})'


def claims(rows):
  n = len({r['seed'] for r in rows})
  dense_acc = _mean(_at(rows, 'ticket', 0, 'test_accuracy'))
  dense_its = _at(rows, 'ticket', 0, 'step')
  dense_it = _mean(dense_its)
  levels = sorted({r['level'] for r in rows if r['level'] > 0})
  acc = {lv: _mean(_at(rows, 'ticket', lv, 'test_accuracy')) for lv in levels}
  it = {lv: _mean(_at(rows, 'ticket', lv, 'step')) for lv in levels}
  spread = f'min {min(dense_its):.0f}, max {max(dense_its):.0f}' if dense_its else 'not run'
  out = [Claim(f'dense: early-stop iteration (mean; {spread}), test accuracy % (n={n})',
               'about 14K (a third-party reading of Figure 4a)',
               f'{dense_it:.0f}, {100 * dense_acc:.2f}', '-', None)]
  lv = _nearest(rows, 13.5)
  diffs = _paired(rows, 'ticket', lv, 'ticket', 0)
  m, low, high = _interval(diffs)
  out.append(Claim(f'L1: ticket minus dense at {_density(rows, lv):.1f}%', 'more than +0.3',
                   _show(m, low, high, len(diffs)), '> +0.3, interval above 0',
                   m > 0.3 and low is not None and low > 0))
  keep = [lv for lv in levels if 7 <= _density(rows, lv) <= 51.3]
  out.append(Claim('L2: tickets at least as accurate as dense from 51% to about 7%',
                   '>= dense',
                   ', '.join(f'{_density(rows, lv):.1f}%: {100 * acc[lv]:.2f}' for lv in keep),
                   'ordering of means', bool(keep) and all(acc[lv] >= dense_acc for lv in keep)))
  fast = [lv for lv in levels if 21 <= _density(rows, lv) <= 51.3]
  out.append(Claim('L3: tickets reach early stopping sooner than dense from 51% to 21%',
                   'faster', ', '.join(f'{_density(rows, lv):.1f}%: {it[lv]:.0f}' for lv in fast),
                   'ordering of means', bool(fast) and all(it[lv] < dense_it for lv in fast)))
  lv = _nearest(rows, 3.6)
  diffs = _paired(rows, 'ticket', lv, 'ticket', 0)
  m, low, high = _interval(diffs)
  out.append(Claim(f'L4: ticket back at the dense level at {_density(rows, lv):.1f}%',
                   'about 0', _show(m, low, high, len(diffs)), '|mean| <= 0.3',
                   abs(m) <= 0.3))
  lv = _nearest(rows, 21.1)
  diffs = _paired(rows, 'ticket', lv, 'reinit', lv)
  m, low, high = _interval(diffs)
  out.append(Claim(f'L5: ticket minus its random reinit at {_density(rows, lv):.1f}%',
                   'about +0.5', _show(m, low, high, len(diffs)), '> 0, interval above 0',
                   m > 0 and low is not None and low > 0))
  return out
