"""A GPT-2-small-shaped causal LM (163M parameters, 123.5M of them pruned)
trained sparse with RigL at 90%, FSDP over every device, bf16 compute and
remat: a systems check at scale (experiments/gpt2_small_fsdp).

Shape of GPT-2 small (Radford et al. 2019): 12 blocks, d_model 768, 12 heads,
MLP 3072, 1024 positions, a 50,257-entry vocabulary; the LM head is its own
matrix here, not tied to the embedding (GPT-2 ties them: 124M), so the model
has 163M parameters. The data is the built-in offline
byte corpus (sparsejax/data/text.py), so only the first 256 token ids occur:
this is a systems check (step time, memory per device, mask-update time),
not a language model worth keeping. The embeddings stay dense; every block
matrix and the LM head are pruned to 90% by RigL (Evci et al. 2020).

On 8 fake CPU devices (what experiments/gpt2_small_fsdp records):

  XLA_FLAGS=--xla_force_host_platform_device_count=8 \\
    sparsejax train --config configs/gpt2_small_text.py --workdir runs/gpt2

`get_config('tiny')` is the same program at a size the tests run in seconds.
"""

from sparsejax.config import default_config

SHAPES = {
    'gpt2_small': dict(vocab_size=50257, max_len=1024, d_model=768, num_heads=12,
                       num_layers=12, mlp_dim=3072),
    'tiny': dict(vocab_size=256, max_len=32, d_model=32, num_heads=2, num_layers=2,
                 mlp_dim=64),
}


def get_config(size='gpt2_small'):
  if size not in SHAPES:
    raise ValueError(f'size must be one of {sorted(SHAPES)}, got {size!r}')
  c = default_config()
  c.data.name = 'text'
  c.data.options = {'seq_len': 64 if size == 'gpt2_small' else 16}
  c.data.batch_size = 8
  c.data.eval_batch_size = 8
  c.model.name = 'transformer_decoder'
  c.model.options = {**SHAPES[size], 'remat': True}
  c.optimizer.name = 'adamw'
  c.optimizer.learning_rate = 3e-4
  c.optimizer.options = {'weight_decay': 0.01}
  c.optimizer.warmup_steps = 20
  c.optimizer.schedule = 'cosine'
  c.optimizer.chain = (('clip_by_global_norm', {'max_norm': 1.0}),)
  c.sparsity = 0.9
  c.pruning.schedule = 'rigl'
  c.pruning.exclude = '^embed/|^pos_embed/'
  c.train.steps = 300
  c.pruning.every = 50
  c.pruning.end = 225   # updates stop at 75% of the run (an int: steps)
  c.train.log_every = 10
  c.train.eval_every = 300
  c.train.checkpoint_every = 300
  c.train.compute_dtype = 'bfloat16'
  c.train.param_dtype = 'float32'
  c.train.pack_masks = True
  c.mesh.shape = (-1, 1)
  c.mesh.fsdp = True
  return c
