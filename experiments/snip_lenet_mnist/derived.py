"""The differences experiments/snip_lenet_mnist/README.md quotes, computed
from results.csv (one row per run) into derived.csv.

Each arm's error is the mean over its seeds of 100 * (1 - best_test_accuracy),
as in reproduce.py; the paper's numbers (Lee et al. 2019, Table 1) are
written out below. Differences are of the unrounded means.

  python experiments/snip_lenet_mnist/derived.py
"""

import csv
import pathlib
import statistics

HERE = pathlib.Path(__file__).resolve().parent
PAPER = {0.95: 1.6, 0.98: 2.4}      # SNIP's test error % in the paper


def main():
  with open(HERE / 'results.csv', newline='') as f:
    runs = list(csv.DictReader(f))

  def error(arm, sparsity):
    return statistics.mean(100 * (1 - float(r['best_test_accuracy'])) for r in runs
                           if r['arm'] == arm and float(r['sparsity']) == sparsity)

  rows = []

  def add(quantity, value, how):
    rows.append((quantity, f'{value:.4f}', how))

  add('SNIP error above the paper at 95%, [0, 1] inputs (points)',
      error('snip', 0.95) - PAPER[0.95], 'mean SNIP error at 95% - 1.6 (paper)')
  add('SNIP error above the paper at 98%, standardised inputs (points)',
      error('snip, standardized inputs', 0.98) - PAPER[0.98],
      'mean SNIP error at 98% with standardised inputs - 2.4 (paper)')
  add('standardisation lowers SNIP error at 98% by (points)',
      error('snip', 0.98) - error('snip, standardized inputs', 0.98),
      'mean SNIP error at 98%, [0, 1] inputs - the same with standardised inputs')
  for sparsity in (0.95, 0.98):
    add(f'random (SNIP counts) error above SNIP at {sparsity:.0%} (points)',
        error('random (SNIP counts)', sparsity) - error('snip', sparsity),
        f'mean error of the random mask with SNIP\'s layer counts - mean SNIP error, {sparsity:.0%}')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
