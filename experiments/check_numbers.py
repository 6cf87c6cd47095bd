"""Every result number in an experiment's README names the CSV cell it is.

The rule: every measured number an experiment's README quotes is a cell of
one of its CSV files (or a mean, std, min or max over cells), and the README
says which, in an HTML comment placed after the table or paragraph that
prints it (so the rendered page stays clean):

  <!-- from results.csv [arm=rigl] mean(final.test_accuracy) err: 1.39; std(final.test_accuracy) pct: 0.01 -->

that is `from FILE [SELECTOR] ENTRY; ENTRY; ...`; one comment may hold
several `from` lines:

  <!-- from results.csv [arm=dense, sparsity=] mean pct: 98.02; std pct: 0.08
       from derived.csv [quantity~"set - static, uniform, 90%"] value: 0.64 -->

- FILE: a path relative to the README's folder (`results/prune.csv`,
  `../dst_lenet_mnist/results.csv`).
- SELECTOR: comma-separated conditions, all of which a row must meet:
  `col=value` the same text or the same number (`sparsity=0.9` matches
  `0.90`; `col=` an empty cell), `col~text` the cell contains the text
  (case-insensitive), `!=` and `!~` their negations, `<`, `<=`, `>`, `>=`
  numeric comparisons (`[arm=ticket, level>=5, level<=11]`). A value with a
  comma, a bracket or a semicolon goes in double quotes. The selector must
  pick exactly one row, or at least one when the entry names a reducer;
  `[]` (or none) is every row.
- ENTRY: `[REDUCER(]COLUMN[)] [TRANSFORM]: NUMBER ...`, the numbers as
  the README prints them (the sign `+` and thousands commas aside).
  REDUCER, over the selected rows: mean, std (sample, n - 1), min, max,
  sum, median. TRANSFORM, at most one, written out, never tried
  implicitly: pct (100 x: 0.9751 -> 97.51), err (100 (1 - x): accuracy
  0.9751 -> error 2.49, density 0.1303 -> 86.97% sparse), comp (100 - x:
  97.51 -> 2.49), neg (-x: a difference of -0.043 printed as "0.04
  below").
- Check: the value printed at the README number's decimals must give that
  number, |value - number| <= half a unit of its last digit (97.51 needs
  [97.505, 97.515]); the sign counts. A text cell ("1.36 ± 0.01 (n=3)",
  "6.90 vs 7.12") gives the numbers in it, and the README number must be
  one of them at its printed decimals.

A number printed several times in a README needs one entry: coverage is by
the number as printed ("+0.36" and "0.36" are the same, "-0.36" is not).
An entry's number that the README does not print is a problem too (a stale
entry).

Numbers that are not results are declared in a comment,

  <!-- check_numbers: paper: 1.44 1.48 (appendix); not results: 0.3 (tolerance); 0.883 (a setting) -->

- `paper:` the paper's numbers: each must appear as a number of the same
  value in the folder's anchor.md (`paper ../x/anchor.md:` names another
  anchor, for experiments/README.md). The numbers of a table column whose
  header starts with "paper" are paper numbers without a declaration
  (unless a `from` entry sources them: another folder's result, or a
  number the folder's script derives from the paper's into its claims.csv).
- `not results:` settings, tolerances, sizes, other sources' numbers.
- `unsourced:` result numbers that no CSV holds at their printed precision
  (derived by hand, or lost): each printed occurrence is a warning line,
  counted, and makes the exit status 1; `check_folder` does not return them
  (`report_folder(...).unsourced` does).
Declared numbers count by value (0.3 declares 0.30; the sign aside) and
after the `from` entries, anywhere in the README. A number inside a "quoted
phrase" declares only its occurrences inside that phrase, before any
`from` entry: `unsourced: "about 3.6 epochs"` marks that 3.6 and not the
3.6% a `from` entry sources elsewhere. Text in parentheses is a note (its
numbers are not declared); after `;` the category goes on until the next
category word.

Which numbers are checked: those with a decimal point (97.51, 0.21, +0.36,
3,118.4) in the README's prose and tables; integers (steps, seeds, counts,
but also measured counts such as early-stop steps) are not, so a clean run
is not a proof. Not checked: fenced code blocks, `inline code`, HTML
comments, scientific notation (1.2e-3), versions (0.10.2), arXiv ids,
numbers followed by a time unit (7.5 min, 1.40 ms), and table columns whose
header names the tolerance or a runtime.

  .venv/bin/python experiments/check_numbers.py [--explain] [FOLDER ...]

With no folder: experiments/README.md and every folder under experiments/
with a README.md. One line per problem (README line, number, why), then a
warning line per unsourced number; with --explain, every checked number
with its kind (from, paper, not results, unsourced, no source) and its
source: the CSV rows and value, the anchor line or the declaration. Exit
status 1 on any problem or unsourced number. As a library (stdlib only):
check_folder(folder) -> [Problem], report_folder(folder) -> Report,
explain_folder(folder) -> [(Number, source or None)].
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import re
import statistics
import sys

HERE = pathlib.Path(__file__).resolve().parent

NUMBER = re.compile(r'\d{1,3}(?:,\d{3})+\.\d+|\d+\.\d+')   # 97.51, 3,118.4
ANY_NUMBER = re.compile(r'\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?')
TIME_UNIT = re.compile(r'\s*(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b')
PAPER_HEADER = re.compile(r'^\s*paper\b', re.I)
SKIPPED_HEADER = re.compile(r'tolerance|ms/step|runtime|seconds|wall', re.I)
DECLARED = re.compile(r'<!--\s*check_numbers:(.*?)-->', re.S)
CATEGORY = re.compile(r'\b(paper(?:\s+[\w./-]+\.md)?|not results|unsourced)\s*:', re.I)
COMMENT = re.compile(r'<!--(.*?)-->', re.S)
FROM = re.compile(r'(?:^|\s)from\s+(?=[^\s\[]+\.csv\b)')
INLINE_CODE = re.compile(r'`[^`\n]*`')
SIGNED = re.compile(r'[-+−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)')

REDUCERS = {
    'mean': statistics.fmean,
    'std': statistics.stdev,
    'min': min,
    'max': max,
    'sum': math.fsum,
    'median': statistics.median,
}
TRANSFORMS = {
    'pct': lambda v: 100 * v,
    'err': lambda v: 100 * (1 - v),
    'comp': lambda v: 100 - v,
    'neg': lambda v: -v,
}


@dataclasses.dataclass(frozen=True)
class Problem:
  """A README number (or an annotation's number) that fails the rule."""
  line: int          # 1-based line of the README
  number: str        # as printed
  why: str

  def __str__(self) -> str:
    return f'README.md:{self.line}: {self.number}: {self.why}'


Candidate = Problem   # the name before the `from` annotations


@dataclasses.dataclass(frozen=True)
class Number:
  """A checked number of a README."""
  line: int
  number: str        # as printed, with its sign if it has one
  context: str       # the line (or table cell) around it
  paper_column: bool = False
  offset: int = -1   # where it starts in its line

  def __str__(self) -> str:
    return f'README.md:{self.line}: {self.number}  | {self.context}'


# ----------------------------------------------------------------- README text

def key(number: str) -> str:
  """A number as printed, for coverage: no '+', no thousands commas, '-' for
  the minus sign."""
  return number.replace(',', '').replace('−', '-').lstrip('+')


def decimals(number: str) -> int:
  return len(number.split('.')[1]) if '.' in number else 0


def _blank(text: str, pattern: re.Pattern) -> str:
  """`text` with every match of `pattern` replaced by spaces (keeps line
  numbers and offsets)."""
  return pattern.sub(lambda m: re.sub(r'[^\n]', ' ', m.group()), text)


def _fenced_blanked(text: str) -> str:
  out, inside = [], False
  for line in text.split('\n'):
    if line.lstrip().startswith('```'):
      inside = not inside
      out.append('')
    else:
      out.append('' if inside else line)
  return '\n'.join(out)


def _numbers(segment: str):
  """(number as printed, offset) for each checked number in `segment`."""
  for m in NUMBER.finditer(segment):
    start, end = m.span()
    before, after = segment[:start], segment[end:]
    if re.search(r'[\d.]$|\d,$', before) or re.match(r'\.\d', after):
      continue                                # part of a version or a longer token
    if re.match(r'[eE][-+]?\d', after):
      continue                                # scientific notation
    if re.search(r'arXiv\s*$', before, re.I):
      continue
    if TIME_UNIT.match(after):
      continue                                # a runtime
    sign = ''
    if re.search(r'(?:^|[\s(/])[-+−]$', before):
      sign = before[-1].replace('−', '-')
    yield sign + m.group().replace(',', ''), start


def readme_numbers(text: str):
  """Number(line, number as printed, context, paper_column) for each checked
  number of a README."""
  original = text.split('\n')
  text = _fenced_blanked(text)
  text = _blank(text, COMMENT)
  text = _blank(text, INLINE_CODE)
  lines = text.split('\n')
  skip_columns: set[int] = set()
  paper_columns: set[int] = set()
  in_table = False
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith('|'):
      cells = re.split(r'(?<!\\)\|', stripped.strip('|'))
      nxt = lines[i + 1].strip() if i + 1 < len(lines) else ''
      if not in_table:
        in_table = True
        skip_columns, paper_columns = set(), set()
        if re.match(r'^\|?\s*:?-{3,}', nxt):   # a header row
          skip_columns = {j for j, c in enumerate(cells) if SKIPPED_HEADER.search(c)}
          paper_columns = {j for j, c in enumerate(cells) if PAPER_HEADER.search(c)}
          continue
      if re.match(r'^\|?\s*:?-{3,}', stripped):
        continue
      shown = re.split(r'(?<!\\)\|', original[i].strip().strip('|'))
      base = len(line) - len(line.lstrip()) + len(stripped) - len(stripped.lstrip('|'))
      starts = [0] + [m.end() for m in re.finditer(r'(?<!\\)\|', stripped.strip('|'))]
      for j, cell in enumerate(cells):
        if j in skip_columns:
          continue
        for number, at in _numbers(cell):
          yield Number(i + 1, number, (shown[j] if j < len(shown) else cell).strip(),
                       j in paper_columns, base + starts[j] + at)
    else:
      in_table = False
      for number, at in _numbers(line):
        yield Number(i + 1, number, original[i].strip(), offset=at)


def _line_of(text: str, offset: int) -> int:
  return text.count('\n', 0, offset) + 1


def _strip_notes(text: str) -> str:
  """`text` without its parenthesised notes (nested ones too)."""
  while True:
    shorter = re.sub(r'\([^()]*\)', ' ', text)
    if shorter == text:
      return text
    text = shorter


def _phrase(phrase: str) -> re.Pattern:
  return re.compile(r'\s+'.join(map(re.escape, phrase.split())))


def declarations(text: str) -> list[tuple[int, str, str, str | None]]:
  """(line, category, number as written, phrase or None) for each number a
  README declares in a check_numbers comment: category 'paper' (or 'paper
  PATH'), 'not results' or 'unsourced'; a number written inside a "quoted
  phrase" comes with the phrase (it declares only the occurrences inside
  that phrase of the README)."""
  out = []
  for m in DECLARED.finditer(text):
    body, line = m.group(1), _line_of(text, m.start())
    parts = CATEGORY.split(body)
    # parts: [before, cat, body, cat, body, ...]
    for cat, chunk in zip(parts[1::2], parts[2::2]):
      cat = ' '.join(cat.split())
      cat = cat[:5].lower() + cat[5:] if cat.lower().startswith('paper') else cat.lower()
      chunk = _strip_notes(chunk)
      for q in re.finditer(r'"([^"]*)"', chunk):
        phrase = ' '.join(q.group(1).split())
        for n, _ in _numbers(phrase):
          out.append((line, cat, n, phrase))
      for n in SIGNED.findall(re.sub(r'"[^"]*"', ' ', chunk)):
        out.append((line, cat, n, None))
  return out


def declared(text: str) -> list[str]:
  """The numbers a README declares in check_numbers comments (any category)."""
  return [key(n) for _, _, n, _ in declarations(text)]


# ------------------------------------------------------------------ annotations

@dataclasses.dataclass(frozen=True)
class Entry:
  """One `column: numbers` of a `from` line."""
  line: int
  file: str
  selector: tuple            # ((column, op, value), ...)
  reducer: str | None
  column: str
  transform: str | None
  numbers: tuple             # as written

  def describe(self) -> str:
    sel = ', '.join(f'{c}{op}{v}' for c, op, v in self.selector)
    col = f'{self.reducer}({self.column})' if self.reducer else self.column
    return f'{self.file} [{sel}] {col}' + (f' {self.transform}' if self.transform else '')


class AnnotationError(ValueError):
  pass


_SEL_ITEM = re.compile(r'\s*([^=~!<>,\]"]+?)\s*(!?[=~]|[<>]=?)\s*("(?:[^"]|"")*"|[^,\]]*?)\s*(?:,|$)')
_ENTRY = re.compile(
    r'^\s*(?:(?P<red>[a-z]+)\(\s*(?P<rcol>[^()\s:]+)\s*\)|(?P<col>[^()\s:]+))'
    r'(?:\s+(?P<tr>[a-z]+))?\s*:\s*(?P<nums>.*?)\s*$', re.S)


def _parse_selector(text: str) -> tuple:
  items, pos = [], 0
  text = text.strip()
  while pos < len(text):
    m = _SEL_ITEM.match(text, pos)
    if not m or m.end() == pos:
      raise AnnotationError(f'cannot read the selector [{text}] at {text[pos:]!r}')
    value = m.group(3)
    if value.startswith('"'):
      value = value[1:-1].replace('""', '"')
    items.append((m.group(1).strip(), m.group(2), value))
    pos = m.end()
  return tuple(items)


def _split_entries(text: str) -> list[str]:
  """`text` split at the semicolons outside double quotes."""
  parts, cur, quoted = [], [], False
  for ch in text:
    if ch == '"':
      quoted = not quoted
    if ch == ';' and not quoted:
      parts.append(''.join(cur))
      cur = []
    else:
      cur.append(ch)
  parts.append(''.join(cur))
  return [p for p in parts if p.strip()]


def parse_from(clause: str, line: int) -> list[Entry]:
  """The entries of one `from` clause (the text after `from`)."""
  clause = ' '.join(clause.split())
  m = re.match(r'(\S+\.csv)\s*', clause)
  if not m:
    raise AnnotationError(f'no CSV file in "from {clause}"')
  file, rest = m.group(1), clause[m.end():]
  selector: tuple = ()
  if rest.startswith('['):
    depth_end, quoted = None, False
    for k, ch in enumerate(rest):
      if ch == '"':
        quoted = not quoted
      elif ch == ']' and not quoted:
        depth_end = k
        break
    if depth_end is None:
      raise AnnotationError(f'unclosed selector in "from {clause}"')
    selector = _parse_selector(rest[1:depth_end])
    rest = rest[depth_end + 1:]
  entries = []
  for part in _split_entries(rest):
    e = _ENTRY.match(part)
    if not e:
      raise AnnotationError(f'cannot read "{part.strip()}" (want [reducer(]column[)] '
                            f'[transform]: numbers) in "from {clause}"')
    reducer, column = (e.group('red'), e.group('rcol')) if e.group('red') else (None, e.group('col'))
    if reducer is not None and reducer not in REDUCERS:
      raise AnnotationError(f'unknown reducer {reducer!r} (one of {", ".join(REDUCERS)})')
    transform = e.group('tr')
    if transform is not None and transform not in TRANSFORMS:
      raise AnnotationError(f'unknown transform {transform!r} (one of {", ".join(TRANSFORMS)})')
    numbers = e.group('nums').split()
    bad = [n for n in numbers if not re.fullmatch(r'[-+−]?[\d,]*\.?\d+', n)]
    if bad or not numbers:
      raise AnnotationError(f'not numbers: {" ".join(bad) or "(none)"} in "{part.strip()}"')
    entries.append(Entry(line, file, selector, reducer, column, transform, tuple(numbers)))
  if not entries:
    raise AnnotationError(f'no "column: number" in "from {clause}"')
  return entries


def annotations(text: str) -> tuple[list[Entry], list[Problem]]:
  """The `from` entries of a README, and the problems reading them."""
  entries, problems = [], []
  for m in COMMENT.finditer(text):
    body = m.group(1)
    if not re.match(r'\s*from\s', body):
      continue
    base = m.start(1)
    found = list(FROM.finditer(body))
    for k, fm in enumerate(found):
      start = fm.end()
      end = found[k + 1].start() if k + 1 < len(found) else len(body)
      line = _line_of(text, base + start)
      try:
        entries += parse_from(body[start:end], line)
      except AnnotationError as err:
        problems.append(Problem(line, 'from', str(err)))
  return entries, problems


# ------------------------------------------------------------------------ CSVs

def _float(cell: str) -> float | None:
  try:
    v = float(cell)
  except ValueError:
    return None
  return v if math.isfinite(v) else None


def cell_numbers(cell: str) -> list[float]:
  """The numbers inside a text cell ("1.36 ± 0.01 (n=3)" -> 1.36, 0.01, 3);
  a sign counts only at the start or after a space or a bracket (so
  "1.44-1.48" gives 1.44 and 1.48)."""
  out = []
  for m in re.finditer(r'(?<![\w.])([-+−]?)(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)', cell):
    sign = m.group(1)
    start = m.start()
    if sign and start > 0 and not re.match(r'[\s(\[,;:/]', cell[start - 1]):
      sign = ''
    out.append(float(m.group(2)) * (-1 if sign in ('-', '−') else 1))
  return out


class Tables:
  """The CSV files of a folder, read once."""

  def __init__(self, folder: pathlib.Path):
    self.folder = folder
    self._cache: dict[str, tuple] = {}

  def read(self, name: str):
    if name not in self._cache:
      path = self.folder / name
      if not path.is_file():
        raise AnnotationError(f'no file {name}')
      with open(path, newline='') as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        self._cache[name] = (reader.fieldnames or [], rows)
    return self._cache[name]


def _cell_matches(cell: str, op: str, value: str) -> bool:
  if op.startswith('!'):
    return not _cell_matches(cell, op[1:], value)
  cell = cell.strip()
  if op[0] in '<>':
    a, b = _float(cell), _float(value)
    if a is None or b is None:
      return False
    return {'<': a < b, '<=': a <= b, '>': a > b, '>=': a >= b}[op]
  if op == '~':
    return value.lower() in cell.lower()
  if cell == value:
    return True
  a, b = _float(cell), _float(value)
  return a is not None and b is not None and a == b


def close(value: float, number: str) -> bool:
  """`value` printed at the decimals of `number` gives `number`."""
  x = float(key(number))
  tol = 0.5 * 10.0 ** -decimals(number)
  return abs(value - x) <= tol * (1 + 1e-9) + 1e-12


def evaluate(entry: Entry, tables: Tables) -> tuple[list[float], str]:
  """The value(s) an entry names (several for a text cell) and where they
  come from; raises AnnotationError when the entry does not name one."""
  fields, rows = tables.read(entry.file)
  for column, _, _ in entry.selector:
    if column not in fields:
      raise AnnotationError(f'{entry.file} has no column {column!r}')
  if entry.column not in fields:
    raise AnnotationError(f'{entry.file} has no column {entry.column!r}')
  picked = [(i, r) for i, r in enumerate(rows)
            if all(_cell_matches(r[c] or '', op, v) for c, op, v in entry.selector)]
  where = entry.describe()
  if not picked:
    raise AnnotationError(f'{where}: no row matches')
  tr = TRANSFORMS[entry.transform] if entry.transform else (lambda v: v)
  if entry.reducer is None:
    if len(picked) > 1:
      raise AnnotationError(f'{where}: {len(picked)} rows match (rows '
                            f'{", ".join(str(i + 2) for i, _ in picked[:6])}) and no reducer is named')
    i, row = picked[0]
    cell = (row[entry.column] or '').strip()
    v = _float(cell)
    if v is not None:
      return [tr(v)], f'{entry.file}:{i + 2} {entry.column}={cell}'
    values = cell_numbers(cell)
    if not values:
      raise AnnotationError(f'{where}: the cell is {cell!r}, no number')
    return [tr(v) for v in values], f'{entry.file}:{i + 2} {entry.column}="{cell}"'
  cells = [(row[entry.column] or '').strip() for _, row in picked]
  values = [_float(c) for c in cells]
  if any(v is None for v in values):
    raise AnnotationError(f'{where}: {entry.reducer} over a cell that is not a number '
                          f'({next(c for c, v in zip(cells, values) if v is None)!r})')
  if entry.reducer == 'std' and len(values) < 2:
    raise AnnotationError(f'{where}: std of one row')
  v = tr(REDUCERS[entry.reducer](values))
  return [v], (f'{entry.file}:{",".join(str(i + 2) for i, _ in picked)} '
               f'{entry.reducer}({entry.column}) of {len(values)} rows')


# ---------------------------------------------------------------------- anchor

def anchor_numbers(path: pathlib.Path) -> dict[float, int] | None:
  """{value: first line} of every number in an anchor.md (None when there
  is no such file)."""
  if not path.is_file():
    return None
  out: dict[float, int] = {}
  for i, line in enumerate(path.read_text().split('\n')):
    for m in ANY_NUMBER.finditer(line):
      out.setdefault(float(m.group().replace(',', '')), i + 1)
  return out


# ---------------------------------------------------------------------- checks

KINDS = ('from', 'paper', 'not results', 'unsourced', 'no source')


@dataclasses.dataclass
class Report:
  """What check_numbers found in one README."""
  numbers: list       # [(Number, kind, how)]: kind one of KINDS, how the source in words
  problems: list      # [Problem]
  unsourced: list     # [Problem]: numbers declared unsourced, as printed in the README

  def counts(self) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for _, kind, _ in self.numbers:
      out[kind] += 1
    return out


def _fmt(v: float) -> str:
  return f'{v:.6g}'


def report_folder(folder) -> Report:
  """Check `folder`'s README.md against its CSV files and anchor.md."""
  folder = pathlib.Path(folder)
  text = (folder / 'README.md').read_text()
  tables = Tables(folder)
  problems: list[Problem] = []
  numbers = list(readme_numbers(text))
  printed = {key(n.number) for n in numbers}

  # `from` entries: each number must be its cell at the printed decimals.
  entries, bad = annotations(text)
  problems += bad
  sourced: dict[str, str | None] = {}      # key -> how (None: an entry that failed)
  for e in entries:
    try:
      values, where = evaluate(e, tables)
    except AnnotationError as err:
      for n in e.numbers:
        problems.append(Problem(e.line, n, str(err)))
        sourced.setdefault(key(n), None)
      continue
    shown = ' / '.join(_fmt(v) for v in values)
    for n in e.numbers:
      if any(close(v, n) for v in values):
        how = f'{where}{" " + e.transform if e.transform else ""} = {shown}'
        sourced[key(n)] = f'{sourced[key(n)]}; {how}' if sourced.get(key(n)) else how
      else:
        problems.append(Problem(e.line, n, f'{e.describe()} is {shown} ({where}), not {n} '
                                f'at {decimals(n)} decimal(s)'))
        sourced.setdefault(key(n), None)
      if key(n) not in printed:
        problems.append(Problem(e.line, n, f'listed by a `from` entry ({e.describe()}) but '
                                'not printed as a checked number in the README'))

  # Declarations (by value, the sign aside); paper numbers must be in their anchor.
  anchors: dict[str, dict | None] = {}

  def in_anchor(number: str, line: int, anchor: str) -> str | None:
    if anchor not in anchors:
      anchors[anchor] = anchor_numbers(folder / anchor)
    found = anchors[anchor]
    if found is None:
      problems.append(Problem(line, number, f'a paper number, but there is no {anchor}'))
      return None
    at = found.get(abs(float(key(number))))
    if at is None:
      problems.append(Problem(line, number, f'a paper number that {anchor} does not quote'))
      return None
    return f'{anchor}:{at}'

  declared_as: dict[float, tuple[str, str | None, int]] = {}   # value -> (kind, how, line)
  in_phrase: list[tuple[str, str, tuple]] = []                  # (key, phrase, (kind, how, line))
  for line, cat, n, phrase in declarations(text):
    value = abs(float(key(n)))
    if cat.startswith('paper'):
      anchor = cat[len('paper'):].strip() or 'anchor.md'
      at = in_anchor(n, line, anchor)
      decl = ('paper', at and f'paper ({at})', line)
    else:
      decl = (cat, f'declared on line {line}', line)
    if phrase is None:
      declared_as.setdefault(value, decl)
    else:
      in_phrase.append((key(n), phrase, decl))
      if not _phrase(phrase).search(_blank(text, COMMENT)):
        problems.append(Problem(line, n, f'declared in the phrase "{phrase}", which the '
                                'README does not print'))

  lines = text.split('\n')

  def phrase_declaration(n: Number):
    """The declaration of a quoted phrase that holds this occurrence."""
    for k, phrase, decl in in_phrase:
      if k == key(n.number) and any(m.start() <= n.offset < m.end() for m in
                                    _phrase(phrase).finditer(lines[n.line - 1])):
        return decl
    return None

  out, unsourced = [], []
  for n in numbers:
    k = key(n.number)
    kind, how = 'no source', None
    decl = phrase_declaration(n)
    if decl is None and k in sourced:
      kind, how = 'from', sourced[k]
      if how is None:
        kind, how = 'no source', 'its `from` entry fails (see above)'
    elif decl is None:
      decl = declared_as.get(abs(float(k)))
    if decl is not None:
      kind, how, line = decl
      if kind == 'paper' and how is None:
        kind, how = 'no source', 'declared paper, not in the anchor (see above)'
      elif kind == 'unsourced':
        how = f'declared unsourced on line {line}'
        unsourced.append(Problem(n.line, n.number, f'declared unsourced (line {line}): no CSV '
                                 f'cell gives it | {_short(n.context, n.number)}'))
    elif kind == 'no source' and how is None and n.paper_column:
      at = in_anchor(n.number, n.line, 'anchor.md')
      kind, how = ('paper', f'paper column ({at})') if at else (
          'no source', 'paper column, not in anchor.md (see above)')
    elif kind == 'no source' and how is None:
      problems.append(Problem(n.line, n.number, 'no `from` entry or check_numbers declaration '
                              f'names it | {_short(n.context, n.number)}'))
    out.append((n, kind, how))
  problems.sort(key=lambda p: p.line)
  return Report(out, problems, unsourced)


def _short(context: str, number: str) -> str:
  if len(context) <= 100:
    return context
  at = context.find(number.lstrip('+-'))
  lo = max(0, at - 45)
  return ('...' if lo else '') + context[lo:lo + 90] + '...'


def explain_folder(folder) -> list[tuple[Number, str | None]]:
  """Every checked README number of `folder` with its source: the cell (file,
  rows, column, value), 'paper (anchor.md:LINE)', 'not results', 'declared
  unsourced ...', or None when it has none."""
  return [(n, how if kind != 'no source' else None) for n, kind, how in report_folder(folder).numbers]


def check_folder(folder) -> list[Problem]:
  """The problems of `folder`'s README: numbers that no `from` entry or
  declaration names, entries whose cell differs at the printed decimals or
  whose selector does not pick one row (or whose file or column is missing),
  entry numbers the README does not print, paper numbers not in the anchor.
  Numbers declared unsourced are not problems here (report_folder lists
  them)."""
  return report_folder(folder).problems


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  explain = '--explain' in argv
  argv = [a for a in argv if a != '--explain']
  folders = ([pathlib.Path(a) for a in argv] if argv else
             [HERE, *sorted(p.parent for p in HERE.glob('*/README.md'))])
  failed = 0
  for folder in folders:
    if not (folder / 'README.md').is_file() and (HERE / folder).is_dir():
      folder = HERE / folder
    if not (folder / 'README.md').is_file():
      print(f'{folder.name}: no README.md')
      failed += 1
      continue
    report = report_folder(folder)
    counts = report.counts()
    print(f'{folder.name}: {len(report.problems)} problem(s); {len(report.numbers)} numbers: '
          + ', '.join(f'{counts[k]} {k}' for k in KINDS))
    for p in report.problems:
      print(f'  {p}')
    for p in report.unsourced:
      print(f'  warning: {p}')
    if explain:
      for n, kind, how in report.numbers:
        print(f'  {n.line}: {n.number} [{kind}] {how or ""}  | {_short(n.context, n.number)}')
    failed += len(report.problems) + len(report.unsourced)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
