"""The differences experiments/dst_lenet_mnist/README.md quotes, computed
from results.csv (one row per group: n, mean, std) into derived.csv.

Accuracies in percent; differences are of the unrounded group means; "std"
ratios divide a difference by the static arm's std.

  python experiments/dst_lenet_mnist/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def main():
  with open(HERE / 'results.csv', newline='') as f:
    groups = {(r['arm'], r['sparsity']): r for r in csv.DictReader(f)}

  def mean(arm, sparsity):
    return 100 * float(groups[(arm, sparsity)]['mean'])

  def std(arm, sparsity):
    return 100 * float(groups[(arm, sparsity)]['std'])

  rows = []

  def add(quantity, value, how):
    rows.append((quantity, f'{value:.4f}', how))

  gaps = {(a, s): abs(mean(f'set-{a}', s) - mean(f'rigl-{a}', s))
          for a in ('uniform', 'erk') for s in ('0.8', '0.9')}
  worst = max(gaps, key=gaps.get)
  add('largest |SET - RigL| over the four rows (points)', gaps[worst],
      f'|mean(set-{worst[0]}) - mean(rigl-{worst[0]})| at sparsity {worst[1]}')
  for alloc in ('uniform', 'erk'):
    for method in ('set', 'rigl'):
      d = mean(f'{method}-{alloc}', '0.9') - mean(f'static-{alloc}', '0.9')
      add(f'{method} - static, {alloc}, 90% (points)', d,
          f'mean({method}-{alloc}) - mean(static-{alloc}) at sparsity 0.9')
      add(f'{method} - static, {alloc}, 90% (static stds)', d / std(f'static-{alloc}', '0.9'),
          f'the difference above / std(static-{alloc}) at sparsity 0.9')
  for method in ('static', 'set', 'rigl'):
    for s in ('0.8', '0.9'):
      add(f'ERK - uniform, {method}, {float(s):.0%} (points)',
          mean(f'{method}-erk', s) - mean(f'{method}-uniform', s),
          f'mean({method}-erk) - mean({method}-uniform) at sparsity {s}')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
