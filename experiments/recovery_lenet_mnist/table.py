"""The recovery table: accuracy right after one-shot pruning and after
fixed-mask fine-tuning, per arm and compression, from the sweep's rows.

  python experiments/recovery_lenet_mnist/table.py runs/recovery/finetune
"""

import sys

from sparsejax.programs.tables import failed, format_stats, load_results, metric_value


def main(directory):
  rows = [r for r in load_results(directory) if not failed(r)]
  arms = sorted({r['arm'] for r in rows})
  sparsities = sorted({r['setting']['sparsity'] for r in rows})
  print('| compression | sparsity | ' + ' | '.join(arms) + ' |')
  print('|---|---|' + '---|' * len(arms))
  for s in sparsities:
    cells = []
    for arm in arms:
      group = [r for r in rows if r['arm'] == arm and r['setting']['sparsity'] == s]
      after = format_stats([metric_value(r, 'test_accuracy') for r in group], True)
      if arm.startswith('gradual'):
        cells.append(after)          # starts dense: there is no 'right after pruning'
      else:
        before = format_stats([metric_value(r, 'after_pruning_test_accuracy') for r in group], True)
        cells.append(f'{before.split(" (")[0]} -> {after}')
    print(f'| {1 / (1 - s):.0f}x | {s:.4f} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main(sys.argv[1])
