"""Claims of the SNIP reproduction: the paper's LeNet-300-100 errors (Lee et
al. 2019, Table 1: reference 1.7%, SNIP 1.6% at 95% and 2.4% at 98%) against
ours, from the best-validation checkpoint's test accuracy, mean over seeds.

Beside them, without a verdict, the metric of the authors' released test
script: 1 - the best test accuracy over a run's evaluations (here every 5k
iterations), which selects on the test set and so reads lower than ours.
Those lines need rows with the evaluation curve (runs made by `sparsejax
reproduce`); results.csv alone does not hold it."""

import statistics

from sparsejax.reproduce import Claim

SWEEP = 'sweep.py'
METRIC = 'early_stop_test_accuracy'
TOLERANCE = 0.3   # percentage points of error


def _errors(rows, arm, sparsity=None):
  errs = [100 * (1 - r['early_stop']['test_accuracy']) for r in rows
          if r['arm'] == arm and (sparsity is None or
                                  abs(r['setting'].get('sparsity', 0) - sparsity) < 1e-9)]
  return errs


def _best_test_errors(rows, arm, sparsity=None):
  """The authors' metric: 100 * (1 - the highest test accuracy over the evaluations)."""
  return [100 * (1 - max(m['test_accuracy'] for _, m in r['curve'] if 'test_accuracy' in m))
          for r in rows if r['arm'] == arm and r.get('curve') and
          (sparsity is None or abs(r['setting'].get('sparsity', 0) - sparsity) < 1e-9)]


def _fmt(errs):
  if not errs:
    return 'not run'
  sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
  return f'{statistics.mean(errs):.2f} ± {sd:.2f} (n={len(errs)})'


def claims(rows):
  out = []
  dense = _errors(rows, 'dense')
  out.append(Claim('dense LeNet-300-100 error %', '1.7', _fmt(dense), f'± {TOLERANCE}',
                   bool(dense) and abs(statistics.mean(dense) - 1.7) <= TOLERANCE))
  for sparsity, paper in ((0.95, 1.6), (0.98, 2.4)):
    snip = _errors(rows, 'snip', sparsity)
    out.append(Claim(f'SNIP error % at {sparsity:.0%}', str(paper), _fmt(snip), f'± {TOLERANCE}',
                     bool(snip) and abs(statistics.mean(snip) - paper) <= TOLERANCE))
    control = _errors(rows, 'random (SNIP counts)', sparsity)
    out.append(Claim(f'SNIP below a random mask with its layer sparsities, {sparsity:.0%}',
                     'SNIP lower', f'{_fmt(snip)} vs {_fmt(control)}', 'ordering',
                     bool(snip and control) and statistics.mean(snip) < statistics.mean(control)))
    for arm in ('grasp', 'synflow'):
      out.append(Claim(f'{arm} error % at {sparsity:.0%} (beside, no target)', '-',
                       _fmt(_errors(rows, arm, sparsity)), '-', None))
    std = _errors(rows, 'snip, standardized inputs', sparsity)
    out.append(Claim(f'SNIP error % at {sparsity:.0%}, standardized inputs (its code)',
                     str(paper), _fmt(std), f'± {TOLERANCE}',
                     bool(std) and abs(statistics.mean(std) - paper) <= TOLERANCE))
  dense_std = _errors(rows, 'dense, standardized inputs')
  out.append(Claim('dense error %, standardized inputs', '1.7', _fmt(dense_std),
                   f'± {TOLERANCE}',
                   bool(dense_std) and abs(statistics.mean(dense_std) - 1.7) <= TOLERANCE))
  for arm, sparsity, paper in (('dense', None, '1.7'), ('snip', 0.95, '1.6'),
                                ('snip', 0.98, '2.4'), ('dense, standardized inputs', None, '1.7'),
                                ('snip, standardized inputs', 0.95, '1.6'),
                                ('snip, standardized inputs', 0.98, '2.4')):
    at = '' if sparsity is None else f' at {sparsity:.0%}'
    out.append(Claim(f"{arm} error %{at}, the authors' metric (best test accuracy over "
                     'evaluations; beside, no verdict)', paper,
                     _fmt(_best_test_errors(rows, arm, sparsity)), '-', None))
  return out
