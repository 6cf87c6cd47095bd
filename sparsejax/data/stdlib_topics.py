"""stdlib-topics: an offline text-classification task (which module wrote this?).

Each example is the first paragraph (at most ~400 characters) of the
docstring of a public function, class, method or property of one of eight
Python standard-library modules; the label is the module. The modules cover
distinct topics (operating system, asynchronous I/O, logging, decimal
arithmetic, unit testing, e-mail, HTTP, XML), each with over 100 documented
members, so a sentence encoder fine-tuned on it (e.g. MiniLM, Task B) has a
real natural-language task that builds on any machine with no download.

Texts shorter than 24 characters are dropped; a text that occurs in two
modules is dropped from both, one that repeats within a module is kept once.
Each class is capped at `per_class` examples and split 80/10/10 into train,
validation and test by a seeded shuffle (stratified, so every split holds
every class and no text is in two splits).

The corpus depends on the Python version (docstrings and members change
between releases) and a little on the platform (`os` differs between POSIX
and Windows): compare numbers only across runs on the same Python.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import warnings

import numpy as np

from sparsejax.data.base import ArraySource, DataError, Dataset
from sparsejax.data.tokenizer import minilm_tokenizer, tokenize

# label -> modules whose public members count for it (packages list the
# submodules whose members are not re-exported at the top level).
MODULES = {
    'os': ('os',),
    'asyncio': ('asyncio',),
    'logging': ('logging', 'logging.handlers', 'logging.config'),
    'decimal': ('decimal',),
    'unittest': ('unittest', 'unittest.mock'),
    'email': ('email', 'email.message', 'email.utils', 'email.header', 'email.parser',
              'email.policy', 'email.headerregistry', 'email.generator', 'email.charset',
              'email.contentmanager', 'email.feedparser', 'email.iterators',
              'email.mime.base', 'email.mime.multipart', 'email.mime.text',
              'email.mime.image', 'email.mime.audio', 'email.mime.application',
              'email.mime.message'),
    'http': ('http', 'http.client', 'http.server', 'http.cookiejar', 'http.cookies'),
    'xml': ('xml.dom.minidom', 'xml.dom.pulldom', 'xml.etree.ElementTree', 'xml.sax',
            'xml.sax.handler', 'xml.sax.saxutils', 'xml.sax.xmlreader',
            'xml.parsers.expat'),
}
LABELS = tuple(MODULES)
# C implementation modules whose members belong to a label ('_socket' style
# names are handled by stripping the leading underscore).
_OWNER_ALIASES = {'posix': 'os', 'nt': 'os', 'pyexpat': 'xml'}
MIN_CHARS = 24
MAX_CHARS = 400
_SIGNATURE = re.compile(r'[\w.]+\(.*\)(\s*->.*)?')


def first_paragraph(doc: str) -> str:
  """The first paragraph of a docstring, whitespace collapsed, cut at a word
  boundary to at most MAX_CHARS; a leading signature line ('f(x) -> int', as
  C functions have) is skipped."""
  for par in re.split(r'\n\s*\n', inspect.cleandoc(doc)):
    text = ' '.join(par.split())
    if text and not _SIGNATURE.fullmatch(text):
      if len(text) > MAX_CHARS:
        text = text[:MAX_CHARS].rsplit(' ', 1)[0]
      return text
  return ''


def _owner(obj) -> str:
  """The label-level module that defines `obj` ('asyncio.events' -> 'asyncio')."""
  root = (getattr(obj, '__module__', None) or '').split('.')[0].lstrip('_')
  return _OWNER_ALIASES.get(root, root)


def _own_doc(value) -> str | None:
  """The docstring a class attribute itself carries (not inherited)."""
  if isinstance(value, property):
    value = value.fget
  value = getattr(value, '__func__', value)   # classmethod / staticmethod
  if not inspect.isroutine(value):
    return None
  doc = getattr(value, '__doc__', None)
  return doc if isinstance(doc, str) else None


def _member_docs(label: str) -> list[str]:
  """First paragraphs of the label's public members, in a fixed order: each
  module's names sorted, each class followed by its methods and properties
  (those defined in the label's own classes along its MRO)."""
  texts = []
  for module_name in MODULES[label]:
    module = importlib.import_module(module_name)
    for attr in sorted(a for a in dir(module) if not a.startswith('_')):
      obj = getattr(module, attr, None)
      if not (inspect.isclass(obj) or inspect.isroutine(obj)) or _owner(obj) != label:
        continue   # constants, submodules, and names imported from elsewhere
      docs = [obj.__doc__ if isinstance(obj.__doc__, str) else None]
      if inspect.isclass(obj):
        seen = set()
        for cls in obj.__mro__:
          if _owner(cls) != label:
            continue
          for name, value in sorted(vars(cls).items()):
            if not name.startswith('_') and name not in seen:
              seen.add(name)
              docs.append(_own_doc(value))
      texts.extend(first_paragraph(d) for d in docs if d)
  return [t for t in texts if len(t) >= MIN_CHARS]


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[tuple[str, ...], ...]:
  """Per label, its distinct texts, minus any text another label also has."""
  with warnings.catch_warnings():   # deprecated names warn on access
    warnings.simplefilter('ignore')
    per_label = [list(dict.fromkeys(_member_docs(label))) for label in LABELS]
  counts: dict[str, int] = {}
  for texts in per_label:
    for t in texts:
      counts[t] = counts.get(t, 0) + 1
  return tuple(tuple(t for t in texts if counts[t] == 1) for texts in per_label)


def texts_and_labels(per_class: int = 100, split_seed: int = 0
                     ) -> dict[str, tuple[list[str], np.ndarray]]:
  """{'train'|'validation'|'test': (texts, labels int32)}, labels indexing
  LABELS. Each class keeps at most `per_class` texts (chosen by the seeded
  shuffle) and is split 80/10/10; each split is then shuffled."""
  if per_class < 10:
    raise DataError(f'per_class must be >= 10 (10% of it is the test split), got {per_class}')
  rng = np.random.default_rng(split_seed)
  parts = {'train': [], 'validation': [], 'test': []}
  for label, texts in enumerate(_corpus()):
    chosen = [texts[i] for i in rng.permutation(len(texts))[:per_class]]
    n_held = max(1, round(0.1 * len(chosen)))
    parts['validation'] += [(t, label) for t in chosen[:n_held]]
    parts['test'] += [(t, label) for t in chosen[n_held:2 * n_held]]
    parts['train'] += [(t, label) for t in chosen[2 * n_held:]]
  out = {}
  for split, items in parts.items():
    items = [items[i] for i in rng.permutation(len(items))]
    out[split] = ([t for t, _ in items], np.array([y for _, y in items], np.int32))
  return out


def dataset(*, max_len: int = 64, tokenizer=None, per_class: int = 100,
            split_seed: int = 0) -> Dataset:
  """The `stdlib_topics` loader: x = token ids int32 (max_len,) (0 = padding),
  y = module index in LABELS. Tokenised with the all-MiniLM-L6-v2 tokenizer
  (sparsejax.data.tokenizer) unless `tokenizer` is given (a
  `tokenizers.Tokenizer`)."""
  if int(max_len) != max_len or max_len < 2:
    raise DataError(f'max_len must be an integer >= 2, got {max_len!r}')
  if tokenizer is None:
    try:
      tokenizer = minilm_tokenizer()
    except (FileNotFoundError, ImportError) as e:
      raise DataError(f'stdlib_topics needs the MiniLM tokenizer: {e}') from None
  splits = {name: ArraySource(tokenize(tokenizer, texts, int(max_len)), y)
            for name, (texts, y) in texts_and_labels(per_class, split_seed).items()}
  return Dataset(name='stdlib-topics', train=splits['train'], test=splits['test'],
                 validation=splits['validation'], num_classes=len(LABELS),
                 input_shape=(int(max_len),), input_dtype=np.int32)
