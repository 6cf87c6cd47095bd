"""A small causal Transformer language model over bytes, gradual pruning to 80%.

The default corpus is the docstrings of Python standard-library modules
(present offline on every machine); point `data.options.path` at any UTF-8
text file to train on your own.

  sparsejax train --config configs/transformer_lm_text.py --workdir runs/lm
"""

from sparsejax.config import default_config


def get_config():
  c = default_config()
  c.data.name = 'text'
  c.data.options = {'seq_len': 64}
  c.data.batch_size = 32
  c.data.eval_batch_size = 64
  c.model.name = 'transformer_decoder'
  c.model.options = {'d_model': 128, 'num_heads': 4, 'num_layers': 2, 'mlp_dim': 256}
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 1e-3
  c.optimizer.options = {'weight_decay': 1e-4}
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = 'cosine'
  c.optimizer.chain = (('clip_by_global_norm', {'max_norm': 1.0}),)
  c.sparsity = 0.8
  c.pruning.schedule = 'gradual'
  c.pruning.exclude = '^embed/|^pos_embed/'
  c.pruning.start = 200
  c.pruning.end = 1500
  c.pruning.every = 100
  c.train.steps = 2000
  c.train.log_every = 50
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
