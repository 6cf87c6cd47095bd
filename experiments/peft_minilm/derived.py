"""The derived numbers experiments/peft_minilm/README.md quotes:

- costs.csv: each method's trainable parameters and training-state bytes,
  counted from the parameter shapes of all-MiniLM-L6-v2 with the 8-class head
  (no model is built or run). As `sparsejax.programs.peft_methods.
  memory_bytes` counts them: float32 everywhere; the training state is the
  gradients (one float per trainable weight), Adam's two moments (two per
  trainable weight) and int32 row or entry indices (4 bytes each); "total"
  adds every parameter (frozen ones too, except for full fine-tuning, where
  all are trainable) and the trainable tree. The optimizer's scalar step
  counters (a few bytes) are left out.
- derived.csv: differences of test-accuracy group means from results.csv (in
  points, of the unrounded means) and ratios of the training states of
  costs.csv.

  python experiments/peft_minilm/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
MIB = 2 ** 20

# all-MiniLM-L6-v2 (BERT): vocabulary, positions, token types, hidden, MLP
# width, layers; the new head has 8 classes.
VOCAB, POSITIONS, TYPES, HIDDEN, MLP, LAYERS, CLASSES = 30522, 512, 2, 384, 1536, 6, 8
# the 36 adapted matrices (fan-in, fan-out): query, key, value, out, fc_in, fc_out
TARGETS = [(HIDDEN, HIDDEN)] * 4 + [(HIDDEN, MLP), (MLP, HIDDEN)]
TARGETS = TARGETS * LAYERS


def n_params():
  embed = (VOCAB + POSITIONS + TYPES) * HIDDEN + 2 * HIDDEN
  layer = (4 * (HIDDEN * HIDDEN + HIDDEN) + 2 * HIDDEN
           + HIDDEN * MLP + MLP + MLP * HIDDEN + HIDDEN + 2 * HIDDEN)
  return embed + LAYERS * layer + HEAD


HEAD = HIDDEN * CLASSES + CLASSES


def costs(method, budget):
  """(trainable weights, index count) of a method at a budget."""
  if method == 'row':        # `budget` rows of each matrix, a row = fan-in weights
    return HEAD + sum(budget * fan_in for fan_in, _ in TARGETS), budget * len(TARGETS)
  if method == 'lora':       # rank `budget`: A (fan-in x r), B (r x fan-out)
    return HEAD + sum(budget * (a + b) for a, b in TARGETS), 0
  if method == 'unstructured':   # `budget` single weights in all, one index each
    return HEAD + budget, budget
  if method == 'full':
    return n_params(), 0
  raise ValueError(method)


ARMS = (('row', 'row, 8 rows', 8), ('lora', 'LoRA rank 4', 4),
        ('unstructured', 'unstructured 165,888', 165888),
        ('row', 'row, 16 rows', 16), ('lora', 'LoRA rank 8', 8),
        ('unstructured', 'unstructured 331,776', 331776), ('full', 'full', None))


def main():
  total = n_params()
  assert total == 22_568_456, total      # the full runs' trainable count
  cost_rows = {}
  for method, name, budget in ARMS:
    trainable, indices = costs(method, budget)
    state = 3 * 4 * trainable + 4 * indices
    params = 4 * trainable + (0 if method == 'full' else 4 * total)
    cost_rows[name] = dict(method=name, trainable_params=trainable,
                           trainable_pct=f'{100 * trainable / total:.4f}',
                           state_bytes=state, state_mib=f'{state / MIB:.4f}',
                           total_bytes=params + state,
                           total_mib=f'{(params + state) / MIB:.4f}')
  with open(HERE / 'costs.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=list(next(iter(cost_rows.values()))))
    writer.writeheader()
    writer.writerows(cost_rows.values())

  with open(HERE / 'results.csv', newline='') as f:
    groups = {(r['arm'], r['finetune.rows']): 100 * float(r['mean'])
              for r in csv.DictReader(f)}
  rows = []

  def add(quantity, value, how):
    rows.append((quantity, value if isinstance(value, int) else f'{value:.4f}', how))

  for n in ('8', '16'):
    add(f'row-l2 - row-random, test, {n} rows (points)',
        groups[('row-l2', n)] - groups[('row-random', n)],
        f'mean(row-l2) - mean(row-random), finetune.rows={n}')
    for arm in ('row-l2', 'row-random'):
      add(f'{arm} - LoRA, test, {n} rows (points)', groups[(arm, n)] - groups[('lora', n)],
          f'mean({arm}) - mean(lora), finetune.rows={n}')
  full = groups[('full', '')]
  peft = {k: v for k, v in groups.items() if k[0] != 'full'}
  add('largest gap of a parameter-efficient group below full, test (points)',
      max(full - v for v in peft.values()), 'max over the 8 groups of mean(full) - mean(group)')
  add('parameter-efficient groups within 1 point of full, test (count of 8)',
      int(sum(abs(v - full) <= 1 for v in peft.values())), '|mean(group) - mean(full)| <= 1')
  for n, row, uns in (('8', 'row, 8 rows', 'unstructured 165,888'),
                      ('16', 'row, 16 rows', 'unstructured 331,776')):
    add(f'row training state below unstructured, {n} rows (%)',
        100 * (1 - cost_rows[row]['state_bytes'] / cost_rows[uns]['state_bytes']),
        f'100 * (1 - state_bytes({row}) / state_bytes({uns})), costs.csv')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
