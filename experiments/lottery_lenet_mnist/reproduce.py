"""Claims of the LeNet-300-100 lottery at the paper's 50k iterations (Frankle
& Carbin 2019, figures 3 and 4): test accuracy and iteration at the
early-stopping point (minimum validation loss, evaluated every 100
iterations), tickets against the dense network and against random
re-initialisation. One seed per config listed in LOTTERY."""

import statistics

from sparsejax.reproduce import Claim

LOTTERY = ['config_50k.py:0']
METRIC = 'early_stop_test_accuracy'


def _at(rows, arm, level, key):
  return [r['early_stop'][key] for r in rows if r['arm'] == arm and r['level'] == level]


def _mean(values):
  return statistics.mean(values) if values else float('nan')


def _density(rows, level):
  return 100 * _mean([r['density'] for r in rows if r['level'] == level])


def _nearest(rows, percent):
  levels = sorted({r['level'] for r in rows})
  return min(levels, key=lambda lv: abs(_density(rows, lv) - percent))


def claims(rows):
  n = len({r['seed'] for r in rows})
  dense_acc = _mean(_at(rows, 'ticket', 0, 'test_accuracy'))
  dense_it = _mean(_at(rows, 'ticket', 0, 'step'))
  levels = sorted({r['level'] for r in rows if r['level'] > 0})
  acc = {lv: _mean(_at(rows, 'ticket', lv, 'test_accuracy')) for lv in levels}
  it = {lv: _mean(_at(rows, 'ticket', lv, 'step')) for lv in levels}
  reinit = {lv: _mean(_at(rows, 'reinit', lv, 'test_accuracy')) for lv in levels}
  out = [Claim(f'dense: early-stop iteration, test accuracy % (n={n})', '-',
               f'{dense_it:.0f}, {100 * dense_acc:.2f}', '-', None)]
  mid = [lv for lv in levels if 7 <= _density(rows, lv) <= 51.3]
  out.append(Claim('tickets at 51-7% reach early stopping sooner than dense', 'faster',
                   ', '.join(f'{_density(rows, lv):.1f}%: {it[lv]:.0f}' for lv in mid),
                   'ordering', bool(mid) and all(it[lv] < dense_it for lv in mid)))
  keep = [lv for lv in levels if _density(rows, lv) >= 6.9]
  out.append(Claim('tickets at least as accurate as dense down to about 7%', '>= dense',
                   ', '.join(f'{_density(rows, lv):.1f}%: {100 * acc[lv]:.2f}' for lv in keep),
                   'ordering', bool(keep) and all(acc[lv] >= dense_acc for lv in keep)))
  lv = _nearest(rows, 13.5)
  gain = 100 * (acc[lv] - dense_acc)
  out.append(Claim(f'ticket minus dense at {_density(rows, lv):.1f}%', 'about +0.3',
                   f'{gain:+.2f}', '± 0.2', abs(gain - 0.3) <= 0.2))
  lv = _nearest(rows, 3.6)
  gap = 100 * (acc[lv] - dense_acc)
  out.append(Claim(f'ticket back at the dense level at {_density(rows, lv):.1f}%', 'about 0',
                   f'{gap:+.2f}', '± 0.3', abs(gap) <= 0.3))
  lv = _nearest(rows, 21.1)
  out.append(Claim(f'reinit below the ticket at {_density(rows, lv):.1f}% (paper: about '
                   '0.5 points, and below dense)', 'reinit lower',
                   f'reinit {100 * reinit[lv]:.2f} vs ticket {100 * acc[lv]:.2f}, '
                   f'dense {100 * dense_acc:.2f}', 'ordering', reinit[lv] < acc[lv]))
  return out
