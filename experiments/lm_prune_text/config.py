"""A 4-layer causal byte-level Transformer LM on the built-in offline text
corpus (docstrings of standard-library modules, sparsejax/data/text.py),
trained dense, then pruned after training (magnitude, Wanda, SparseGPT;
50% unstructured and 2:4) and retrained with the mask fixed.

  get_config()            the dense LM (sparsejax train)
  get_config('prune')     the same model, for `sparsejax prune --from DENSE_RUN`
  get_config('finetune')  retraining of a `sparsejax prune` workdir, mask fixed
  get_config('distill')   the same with distillation from the dense weights
                          (distill.teacher='start': the weights it was pruned from),
                          the README's example: temperature 2, kd_weight 1
  get_config('distill_t1') the same at temperature 1

See run.py for the whole pipeline and README.md for the results.
"""

import pathlib

import ml_collections

from sparsejax.config import load_config

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / 'configs'

FINETUNE_STEPS = 150


def _pruning(schedule):
  # embeddings stay dense, as in both papers (the blocks' Dense kernels and the
  # LM head are the prunable leaves; `sparsejax prune` prunes the blocks only)
  return ml_collections.ConfigDict(dict(schedule=schedule, include=None,
                                        exclude='^embed/|^pos_embed/', min_ndim=2))


def get_config(arg=None):
  c = load_config(CONFIGS / 'transformer_lm_text.py')
  c.data.options = {'seq_len': 64}
  c.data.batch_size = 32
  c.data.eval_batch_size = 128
  c.model.options = {'d_model': 128, 'num_heads': 4, 'num_layers': 4, 'mlp_dim': 512,
                     'max_len': 64, 'dropout': 0.1}
  c.optimizer.learning_rate = 2e-3
  c.optimizer.options = {'weight_decay': 0.01}
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = 'cosine'
  c.sparsity = 0.0
  c.pruning = _pruning('dense')
  c.train.steps = 1200
  c.train.log_every = 50
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  if arg in (None, 'dense', 'prune'):
    return c
  if arg not in ('finetune', 'distill', 'distill_t1'):
    raise ValueError("get_config takes None, 'prune', 'finetune', 'distill' or 'distill_t1'; "
                     f'got {arg!r}')
  c.finetune.method = 'masked'
  c.pruning = _pruning('fixed')
  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 20
  c.train.steps = FINETUNE_STEPS
  c.train.eval_every = FINETUNE_STEPS
  c.train.checkpoint_every = FINETUNE_STEPS
  c.train.eval_at_start = True
  if arg in ('distill', 'distill_t1'):
    c.distill.teacher = 'start'
    c.distill.temperature = 2.0 if arg == 'distill' else 1.0
  return c
