"""Claims of the RigL appendix reproduction (Evci et al. 2020, appendix B,
Table 2, row RigL: 1.44 (1.48); anchor.md): LeNet-300-100 with 99% / 89% of
the first / second layer's connections removed (97.5% of the network), 1.44%
the lowest test error seen during training, 1.48% the final one. The arm
`rigl_paper` runs that setting (5 seeds); its claims were added, with the
arm, before any of its runs. The first claims, at about 87% overall, stand
on a misread anchor (the paper's "0.870" is the sparsity of the network left
after dead neurons are removed) and are kept beside, as recorded.

The arm `rigl_paper_uniform` ablates the initialisation (uniform Glorot,
the default of the TensorFlow layers the authors' script builds, against
our Gaussian Glorot) at the paper's sparsity, 5 seeds. Its claim was
written with the arm, before any of its runs: it is judged as the main one
(the mean final error within 0.2 of 1.48), and the difference from
`rigl_paper` is reported with a Welch 95% interval; the init explains the
miss only if this arm passes where `rigl_paper` misses."""

import statistics

from sparsejax.reproduce import Claim

SWEEP = 'sweep.py'
METRIC = 'test_accuracy'
TOLERANCE = 0.2   # percentage points of error around the paper's range
LOW, HIGH = 1.44, 1.48
BEST, FINAL = 1.44, 1.48   # the paper's best-during-training and final error
T95 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571}   # t(0.975, n - 1)
T95_DF = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
          9: 2.262, 10: 2.228}   # t(0.975, df)


def _errors(rows, arm):
  return [100 * (1 - r['final']['test_accuracy']) for r in rows if r['arm'] == arm]


def _fmt(errs):
  if not errs:
    return 'not run'
  sd = statistics.stdev(errs) if len(errs) > 1 else 0.0
  return f'{statistics.mean(errs):.2f} ± {sd:.2f} (n={len(errs)})'


def _best_errors(rows, arm):
  """The lowest test error over each run's evaluations (the paper's 1.44)."""
  return [100 * (1 - max(m['test_accuracy'] for _, m in r['curve'] if 'test_accuracy' in m))
          for r in rows if r['arm'] == arm and r.get('curve')]


def _ci(errs):
  """(mean, low, high): the 95% t-interval over seeds."""
  m = statistics.mean(errs)
  h = T95.get(len(errs), 2.0) * statistics.stdev(errs) / len(errs) ** 0.5 if len(errs) > 1 \
      else float('inf')
  return m, m - h, m + h


def _paper_claim(name, paper, errs):
  """Passes when the mean over seeds is within TOLERANCE of the paper's
  number; the text says whether the whole 95% interval is."""
  if len(errs) < 2:
    return Claim(name, f'{paper}', _fmt(errs), f'± {TOLERANCE}', None)
  m, lo, hi = _ci(errs)
  inside = paper - TOLERANCE <= lo and hi <= paper + TOLERANCE
  return Claim(name, f'{paper}', f'{m:.2f} (95% CI {lo:.2f}-{hi:.2f}, n={len(errs)}; '
               f'CI {"inside" if inside else "not inside"} the tolerance)', f'± {TOLERANCE}',
               abs(m - paper) <= TOLERANCE)


def claims(rows):
  out = [_paper_claim("RigL at the paper's sparsity (99% / 89% / dense output): final "
                      'error %', FINAL, _errors(rows, 'rigl_paper')),
         _paper_claim("RigL at the paper's sparsity: lowest error % during training "
                      '(test set every epoch)', BEST, _best_errors(rows, 'rigl_paper'))]
  out += _init_ablation(rows)
  out += _claims_at_87(rows)
  return out


def _welch(a, b):
  """(difference of means a - b, low, high): Welch's 95% t-interval (df
  rounded down)."""
  va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
  df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
  h = T95_DF[max(1, min(10, int(df)))] * (va + vb) ** 0.5
  d = statistics.mean(a) - statistics.mean(b)
  return d, d - h, d + h


def _init_ablation(rows):
  uniform, normal = _errors(rows, 'rigl_paper_uniform'), _errors(rows, 'rigl_paper')
  out = [_paper_claim("Init ablation: RigL at the paper's sparsity with uniform Glorot "
                      'kernels (the TensorFlow default): final error %', FINAL, uniform)]
  if len(uniform) > 1 and len(normal) > 1:
    d, lo, hi = _welch(uniform, normal)
    ours = f'{d:+.2f} (Welch 95% CI {lo:+.2f} to {hi:+.2f}; n={len(uniform)} vs {len(normal)})'
  else:
    ours = 'not run'
  out.append(Claim('Init ablation: final error % uniform minus Gaussian Glorot (beside, no '
                   'target)', '-', ours, '-', None))
  return out


def _claims_at_87(rows):
  rigl = _errors(rows, 'rigl')
  out = [Claim('RigL error % at ~87% (layers s, 0.9 s, dense output; a misread anchor)',
               f'{LOW}-{HIGH}',
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
