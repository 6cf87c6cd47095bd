"""Row-based sparse fine-tuning of all-MiniLM-L6-v2 on stdlib-topics against
LoRA, unstructured sparse fine-tuning and full fine-tuning (3 seeds).

The 36 attention and MLP matrices of the 6 layers are adapted; a new
classification head is trained in full by every method. Budgets: 8 and 16
rows per matrix; LoRA rank 4 and 8 give the same trainable counts (per
layer 4x384r + 384r + 1536r = 3456r rows-weights, 4x768k + 2x1920k = 6912k
LoRA weights). Unstructured: the same number of individual weights, chosen
by accumulated gradient magnitude over 4 batches. Why this task: it is a
real natural-language classification task that can be built offline on any
machine (docstrings of 8 standard-library modules, which module a docstring
comes from), small enough to fine-tune a 22.7M-parameter model on 2 CPU
cores (640/80/80 examples).

  sparsejax sweep --config experiments/peft_minilm/finetune.py --workdir runs/minilm
"""

import pathlib

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'
PROGRAM = 'finetune'
BUDGETS = ((8, 4), (16, 8))


def get_config():
  c = load_config(CONFIGS / 'minilm_stdlib_topics.py')
  c.train.steps = 150
  c.train.eval_every = 50
  c.train.log_every = 10
  c.train.checkpoint_every = 150
  c.finetune.select = 'gradient'
  return c


def get_sweep():
  for seed in (0, 1, 2):
    for rows, rank in BUDGETS:
      for score in ('l2', 'random'):
        yield {'seed': seed, 'finetune.method': 'row', 'finetune.rows': rows,
               'finetune.row_score': score, '_arm': f'row-{score}'}
      yield {'seed': seed, 'finetune.method': 'lora', 'finetune.rank': rank,
             'finetune.rows': rows, '_arm': 'lora'}
      yield {'seed': seed, 'finetune.method': 'unstructured', 'finetune.rows': rows,
             '_arm': 'unstructured'}
    yield {'seed': seed, 'finetune.method': 'full', 'optimizer.learning_rate': 5e-5,
           '_arm': 'full'}
