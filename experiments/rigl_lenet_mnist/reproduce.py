"""Claims of the RigL appendix reproduction (Evci et al. 2020): LeNet-300-100
at about 87% sparsity, 1.44-1.48% test error; static and SET beside it. Our
number is the final test error, mean over seeds."""

import statistics

from sparsejax.reproduce import Claim

SWEEP = 'sweep.py'
METRIC = 'test_accuracy'
TOLERANCE = 0.2   # percentage points of error around the paper's range
LOW, HIGH = 1.44, 1.48


def _errors(rows, arm):
  return [100 * (1 - r['final']['test_accuracy']) for r in rows if r['arm'] == arm]


def _fmt(errs):
  if not errs:
    return 'not run'
  sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
  return f'{statistics.mean(errs):.2f} ± {sd:.2f} (n={len(errs)})'


def claims(rows):
  rigl = _errors(rows, 'rigl')
  out = [Claim('RigL error % at ~87% (layers s, 0.9 s, dense output)', f'{LOW}-{HIGH}',
               _fmt(rigl), f'± {TOLERANCE}',
               bool(rigl) and LOW - TOLERANCE <= statistics.mean(rigl) <= HIGH + TOLERANCE)]
  static, set_ = _errors(rows, 'static'), _errors(rows, 'set')
  mean = lambda v: statistics.mean(v) if v else float('nan')
  out.append(Claim('static < SET ≈ RigL in accuracy (as in experiments/dst_lenet_mnist: '
                   '"≈" within 0.5 points)', 'ordering',
                   f'static {_fmt(static)}, SET {_fmt(set_)}, RigL {_fmt(rigl)}',
                   'ordering; |SET - RigL| <= 0.5',
                   bool(static and set_ and rigl) and mean(static) > max(mean(set_), mean(rigl))
                   and abs(mean(set_) - mean(rigl)) <= 0.5))
  out.append(Claim('dense error % (beside, no target)', '-', _fmt(_errors(rows, 'dense')), '-',
                   None))
  return out
