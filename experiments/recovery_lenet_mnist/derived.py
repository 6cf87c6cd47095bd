"""The differences experiments/recovery_lenet_mnist/README.md quotes,
computed from results.csv (after fine-tuning) and results_before_finetune.csv
(right after pruning) into derived.csv. Accuracies in percent; differences of
the unrounded group means, in points. The dense models' accuracy is the
gradual arm's "right after pruning" value (its step 0 is the dense model;
the same for every compression).

  python experiments/recovery_lenet_mnist/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
COMPRESSIONS = {'0.5': 2, '0.75': 4, '0.875': 8, '0.916667': 12, '0.9375': 16,
                '0.96875': 32, '0.984375': 64}


def _groups(name):
  with open(HERE / name, newline='') as f:
    return {(r['arm'], r['sparsity']): 100 * float(r['mean']) for r in csv.DictReader(f)}


def main():
  after, before = _groups('results.csv'), _groups('results_before_finetune.csv')
  dense = before[('gradual-magnitude', '0.5')]
  assert all(before[('gradual-magnitude', s)] == dense for s in COMPRESSIONS)
  rows = []

  def add(quantity, value, how):
    rows.append((quantity, f'{value:.4f}', how))

  for arm in ('global-magnitude', 'gradual-magnitude'):
    add(f'{arm} at 12x - dense (points)', after[(arm, '0.916667')] - dense,
        f'mean({arm}) at sparsity 0.916667 - dense (gradual arm before fine-tuning)')
  for s, c in COMPRESSIONS.items():
    add(f'global magnitude - global random at {c}x (points)',
        after[('global-magnitude', s)] - after[('global-random', s)],
        f'mean(global-magnitude) - mean(global-random) at sparsity {s}')
  for s, c in COMPRESSIONS.items():
    add(f'global - layer-wise magnitude at {c}x (points)',
        after[('global-magnitude', s)] - after[('layer-magnitude', s)],
        f'mean(global-magnitude) - mean(layer-magnitude) at sparsity {s}')
  for s, c in COMPRESSIONS.items():
    add(f'gradual - one-shot global magnitude at {c}x (points)',
        after[('gradual-magnitude', s)] - after[('global-magnitude', s)],
        f'mean(gradual-magnitude) - mean(global-magnitude) at sparsity {s}')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
