"""The differences experiments/pai_lenet_mnist/README.md quotes, computed
from results.csv (one row per group: n, mean, std) into derived.csv.
Accuracies and errors in percent; differences of the unrounded group means.

  python experiments/pai_lenet_mnist/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def main():
  with open(HERE / 'results.csv', newline='') as f:
    groups = {(r['arm'], r['sparsity']): r for r in csv.DictReader(f)}

  def mean(arm, sparsity=''):
    return 100 * float(groups[(arm, sparsity)]['mean'])

  rows = []

  def add(quantity, value, how):
    rows.append((quantity, f'{value:.4f}', how))

  add('SNIP error above dense error at 95% (points)', mean('dense') - mean('snip', '0.95'),
      'mean(dense) - mean(snip) at sparsity 0.95 (error = 100 - accuracy)')
  for s in ('0.95', '0.98'):
    for arm in ('snip', 'grasp', 'synflow'):
      add(f'{arm} - random (uniform), {float(s):.0%} (points)',
          mean(arm, s) - mean('random', s), f'mean({arm}) - mean(random) at sparsity {s}')
    add(f'|SNIP - SynFlow|, {float(s):.0%} (points)', abs(mean('snip', s) - mean('synflow', s)),
        f'|mean(snip) - mean(synflow)| at sparsity {s}')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
