"""Claims of the Han et al. 2015 reproduction: LeNet-300-100 pruned 12x with
their per-layer rates and L2 retraining, iterative (table 1: 1.64% error
dense, 1.59% pruned; table 2: 8% / 9% / 26% of fc1 / fc2 / fc3 kept). Ours:
final test error, mean over seeds, dense (level 0) and after round 4."""

import statistics

from sparsejax.reproduce import Claim

LOTTERY = ['config.py']
TOLERANCE = 0.3   # percentage points of error
KEPT = {'hidden_0/kernel': 0.08, 'hidden_1/kernel': 0.09, 'output/kernel': 0.26}


def _errors(rows, level):
  return [100 * (1 - r['final']['test_accuracy']) for r in rows if r['level'] == level]


def _fmt(errs):
  if not errs:
    return 'not run'
  sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
  return f'{statistics.mean(errs):.2f} ± {sd:.2f} (n={len(errs)})'


def claims(rows):
  last = max((r['level'] for r in rows), default=0)
  dense, pruned = _errors(rows, 0), _errors(rows, last)
  out = [Claim('dense error %', '1.64', _fmt(dense), f'± {TOLERANCE}',
               bool(dense) and abs(statistics.mean(dense) - 1.64) <= TOLERANCE),
         Claim(f'error % after pruning 12x and retraining (round {last})', '1.59', _fmt(pruned),
               f'± {TOLERANCE}',
               bool(pruned) and abs(statistics.mean(pruned) - 1.59) <= TOLERANCE)]
  if dense and pruned:
    gap = statistics.mean(pruned) - statistics.mean(dense)
    out.append(Claim('12x with no loss: pruned error minus dense error', '-0.05',
                     f'{gap:+.2f}', '<= +0.1', gap <= 0.1))
  final = [r for r in rows if r['level'] == last]
  kept = {k: sorted({round(r['layer_density'][k], 4) for r in final}) for k in KEPT}
  total = sorted({round(1 / r['density'], 2) for r in final})
  out.append(Claim('weights kept per layer (fc1, fc2, fc3) and compression',
                   '8%, 9%, 26%; 12x', f'{kept}; {total}x', 'exact',
                   all(v == [KEPT[k]] for k, v in kept.items())))
  for level in range(1, last):
    out.append(Claim(f'error % after round {level} (beside)', '-', _fmt(_errors(rows, level)),
                     '-', None))
  return out
