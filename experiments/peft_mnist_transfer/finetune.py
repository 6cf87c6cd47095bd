"""Vision transfer: LeNet-300-100 pretrained on MNIST digits 0-4, fine-tuned
on digits 5-9 with a new head, training only part of the two hidden
matrices: row-based sparse fine-tuning (Li & Bhaskara 2025; rows chosen by
L2 norm, Taylor score, or at random as the control), LoRA at a matched
budget, unstructured sparse fine-tuning of the same number of weights
(chosen by change after a 100-step dense phase, LT-SFT), and full
fine-tuning. Budgets: 4 and 16 rows per matrix (4,336 and 17,344 trained
weights; LoRA rank 3 and 12 on 784x300 and 300x100 train 4,452 and 17,808,
the nearest ranks); the new 5-class head (505 weights) is trained by all.

  sparsejax sweep --config experiments/peft_mnist_transfer/finetune.py --workdir runs/transfer/finetune
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
PROGRAM = 'finetune'
BUDGETS = ((4, 3), (16, 12))     # (rows per matrix, matching LoRA rank)


def get_config():
  c = load_config(CONFIGS / 'lenet300_100_mnist.py')
  c.data.options = {'split': '55k/5k/10k', 'classes': (5, 6, 7, 8, 9)}
  c.finetune.targets = r'hidden_\d/kernel'
  c.finetune.head = '^output/'
  c.finetune.dense_steps = 100
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = 'cosine'
  c.train.steps = 1000
  c.train.eval_every = 250
  c.train.log_every = 100
  c.train.checkpoint_every = 1000
  c.train.eval_splits = ('validation', 'test')
  return c


def get_sweep():
  for seed in (0, 1, 2):
    common = {'seed': seed, 'finetune.init_from': f'{{workdir}}/../pretrain/seed_{seed}'}
    for rows, rank in BUDGETS:
      for score in ('l2', 'taylor', 'random'):
        yield {**common, 'finetune.method': 'row', 'finetune.rows': rows,
               'finetune.row_score': score, '_arm': f'row-{score}'}
      yield {**common, 'finetune.method': 'lora', 'finetune.rank': rank,
             'finetune.rows': rows, '_arm': 'lora'}
      yield {**common, 'finetune.method': 'unstructured', 'finetune.rows': rows,
             'finetune.select': 'delta', '_arm': 'unstructured'}
    yield {**common, 'finetune.method': 'full', '_arm': 'full'}
