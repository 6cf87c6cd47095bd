"""The derived numbers experiments/peft_mnist_transfer/README.md quotes:

- costs.csv: each method's trainable parameters and training-state bytes,
  counted from the parameter shapes of LeNet-300-100 with the 5-class head
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

  python experiments/peft_mnist_transfer/derived.py
"""

import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent
KIB, MIB = 2 ** 10, 2 ** 20

# LeNet-300-100 on 784 inputs, new 5-class head; the adapted matrices
# (fan-in, fan-out) are the two hidden kernels.
LAYERS = [(784, 300), (300, 100), (100, 5)]
TARGETS = LAYERS[:2]
HEAD = 100 * 5 + 5


def n_params():
  return sum(a * b + b for a, b in LAYERS)


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


ARMS = (('row', 'row, 4 rows', 4), ('lora', 'LoRA rank 3', 3),
        ('unstructured', 'unstructured 4,336', 4336),
        ('row', 'row, 16 rows', 16), ('lora', 'LoRA rank 12', 12),
        ('unstructured', 'unstructured 17,344', 17344), ('full', 'full', None))


def main():
  total = n_params()
  assert total == 266_105, total      # the full runs' trainable count
  cost_rows = {}
  for method, name, budget in ARMS:
    trainable, indices = costs(method, budget)
    state = 3 * 4 * trainable + 4 * indices
    params = 4 * trainable + (0 if method == 'full' else 4 * total)
    cost_rows[name] = dict(method=name, trainable_params=trainable,
                           state_bytes=state, state_kib=f'{state / KIB:.4f}',
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
    rows.append((quantity, f'{value:.4f}', how))

  for n in ('4', '16'):
    for arm in ('row-l2', 'row-taylor'):
      add(f'{arm} - row-random, {n} rows (points)', groups[(arm, n)] - groups[('row-random', n)],
          f'mean({arm}) - mean(row-random), finetune.rows={n}')
    add(f'row-l2 - LoRA, {n} rows (points)', groups[('row-l2', n)] - groups[('lora', n)],
        f'mean(row-l2) - mean(lora), finetune.rows={n}')
  for n, rank, uns in (('4', '3', '4,336'), ('16', '12', '17,344')):
    row = cost_rows[f'row, {n} rows']['state_bytes']
    add(f'row training state below LoRA rank {rank}, {n} rows (%)',
        100 * (1 - row / cost_rows[f'LoRA rank {rank}']['state_bytes']),
        f'100 * (1 - state_bytes(row, {n} rows) / state_bytes(LoRA rank {rank})), costs.csv')
    add(f'row training state below unstructured, {n} rows (%)',
        100 * (1 - row / cost_rows[f'unstructured {uns}']['state_bytes']),
        f'100 * (1 - state_bytes(row, {n} rows) / state_bytes(unstructured {uns})), costs.csv')
  with open(HERE / 'derived.csv', 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['quantity', 'value', 'how'])
    writer.writerows(rows)


if __name__ == '__main__':
  main()
