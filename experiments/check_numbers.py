"""Numbers in an experiment's README that are in none of its CSV files.

The rule: every measured number an experiment's README quotes is in that
folder's CSV files, so a reader can check it (settings, the paper's numbers
and runtimes are not results). This script lists the candidates that break
it; a person decides. It looks only at numbers with a decimal point (97.51,
0.21, +0.36); integers (steps, seeds, counts, layer sizes, but also measured
counts such as early-stop steps) are not checked, so a clean run is not a
proof.

A README number matches when some number in some cell of the folder's CSV
files (the folder's own and those in its results/) (plain cells and numbers inside text cells such as "1.36 ± 0.01 (n=3)")
gives it, at the README's printed digits, as itself, as a percentage (0.9751
-> 97.51) or as an error (0.9751 -> 2.49, or 97.51 -> 2.49); the sign is
ignored.

Not checked: fenced code blocks, `inline code`, HTML comments, scientific
notation (1.2e-3), versions (0.10.2), arXiv ids, numbers followed by a time
unit (7.5 min, 1.40 ms), and table columns whose header names the paper,
the tolerance or a runtime. Numbers that are not results (the paper's, the
setting's) and that the rules above miss are declared in the README in a
comment,

  <!-- check_numbers: not results: 1.7 1.6 2.4 (paper); 0.3 (tolerance) -->

whose decimal numbers are then accepted anywhere in that README (by value:
a declared 0.3 also passes a result printed as 0.3). Derived
numbers (differences, ratios) belong in a CSV the folder's own script
computes from its other CSVs, so they can be checked too.

  .venv/bin/python experiments/check_numbers.py [--explain] [FOLDER ...]

With no folder, every folder under experiments/ with a README.md; with
--explain, also every number that matched and what it matched (a match can
be a coincidence, most easily for numbers printed with one decimal). Exit
status 1 when a candidate is found. As a library (stdlib only):
check_folder(folder) -> [Candidate], explain_folder(folder) -> [(Candidate,
how it matched or None)].
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent

NUMBER = re.compile(r'\d{1,3}(?:,\d{3})+\.\d+|\d+\.\d+')   # 97.51, 3,118.4
CSV_NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?')
TIME_UNIT = re.compile(r'\s*(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b')
SKIPPED_HEADER = re.compile(r'paper|tolerance|ms/step|runtime|seconds|wall', re.I)
DECLARED = re.compile(r'<!--\s*check_numbers:(.*?)-->', re.S)
COMMENT = re.compile(r'<!--.*?-->', re.S)
INLINE_CODE = re.compile(r'`[^`\n]*`')


@dataclasses.dataclass(frozen=True)
class Candidate:
  """A README number that no CSV number gives."""
  line: int          # 1-based line of the README
  number: str        # as printed, with its sign if it has one
  context: str       # the line (or table cell) around it

  def __str__(self) -> str:
    return f'README.md:{self.line}: {self.number}  | {self.context}'


def csv_files(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted([*folder.glob('*.csv'), *folder.glob('results/*.csv')])


def csv_numbers(folder: pathlib.Path) -> list[float]:
  """Every number in every cell of the folder's CSV files."""
  values = set()
  for path in csv_files(folder):
    with open(path, newline='') as f:
      for row in csv.reader(f):
        for cell in row:
          for m in CSV_NUMBER.finditer(cell):
            try:
              values.add(float(m.group()))
            except ValueError:
              pass
  return sorted(values)


FORMS = (('as is', lambda v: v), ('x100', lambda v: 100 * v),
         ('100 - x100', lambda v: 100 - 100 * v), ('100 - it', lambda v: 100 - v))


def match_of(number: str, values) -> str | None:
  """How `number` (as printed) comes from one of `values` at its printed
  digits (directly, as a percentage or as an error, 100 - accuracy), e.g.
  '0.9751 x100', the closest when several do; None when none does."""
  x = abs(float(number))
  digits = len(number.split('.')[1]) if '.' in number else 0
  tol = 0.5 * 10.0 ** -digits + 1e-9
  best = None
  for v in values:
    for name, form in FORMS:
      miss = abs(abs(form(v)) - x)
      if miss <= tol and (best is None or miss < best[0]):
        best = (miss, f'{v!r} {name}')
  return best and best[1]


def matches(number: str, values) -> bool:
  return match_of(number, values) is not None


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
  """(line, number as printed, context) for each checked number of a README."""
  original = text.split('\n')
  text = _fenced_blanked(text)
  text = _blank(text, COMMENT)
  text = _blank(text, INLINE_CODE)
  lines = text.split('\n')
  skip_columns: set[int] = set()
  in_table = False
  for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith('|'):
      cells = stripped.strip('|').split('|')
      nxt = lines[i + 1].strip() if i + 1 < len(lines) else ''
      if not in_table:
        in_table = True
        skip_columns = set()
        if re.match(r'^\|?\s*:?-{3,}', nxt):   # a header row
          skip_columns = {j for j, c in enumerate(cells) if SKIPPED_HEADER.search(c)}
          continue
      if re.match(r'^\|?\s*:?-{3,}', stripped):
        continue
      shown = original[i].strip().strip('|').split('|')
      for j, cell in enumerate(cells):
        if j in skip_columns:
          continue
        for number, _ in _numbers(cell):
          yield i + 1, number, (shown[j] if j < len(shown) else cell).strip()
    else:
      in_table = False
      for number, _ in _numbers(line):
        yield i + 1, number, original[i].strip()


def declared(text: str) -> list[str]:
  """The numbers a README declares not to be results."""
  return [n.replace(',', '') for block in DECLARED.findall(text) for n in NUMBER.findall(block)]


def _short(context: str, number: str) -> str:
  if len(context) <= 100:
    return context
  at = context.find(number.lstrip('+-'))
  lo = max(0, at - 45)
  return ('...' if lo else '') + context[lo:lo + 90] + '...'


def explain_folder(folder) -> list[tuple[Candidate, str | None]]:
  """Every checked README number of `folder` with how it matched: 'declared'
  (in a check_numbers comment), the CSV value and form it matched, or None."""
  folder = pathlib.Path(folder)
  text = (folder / 'README.md').read_text()
  values = csv_numbers(folder)
  allowed = {float(n) for n in declared(text)}
  out = []
  for line, number, context in readme_numbers(text):
    how = match_of(number, values)
    if abs(float(number)) in allowed:
      how = f'declared; also {how}' if how else 'declared'
    out.append((Candidate(line, number, _short(context, number)), how))
  return out


def check_folder(folder) -> list[Candidate]:
  """The README numbers of `folder` that match no number of its CSV files
  (nor a number the README declares not to be a result)."""
  return [c for c, how in explain_folder(folder) if how is None]


def main(argv=None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  explain = '--explain' in argv
  argv = [a for a in argv if a != '--explain']
  folders = ([pathlib.Path(a) for a in argv] if argv else
             sorted(p.parent for p in HERE.glob('*/README.md')))
  found = 0
  for folder in folders:
    if not (folder / 'README.md').is_file() and (HERE / folder).is_dir():
      folder = HERE / folder
    if not (folder / 'README.md').is_file():
      print(f'{folder.name}: no README.md')
      continue
    numbers = explain_folder(folder)
    candidates = [c for c, how in numbers if how is None]
    found += len(candidates)
    print(f'{folder.name}: {len(candidates)} number(s) in README.md not in its CSV files'
          f' ({", ".join(str(p.relative_to(folder)) for p in csv_files(folder)) or "no CSV"})')
    for c, how in numbers:
      if how is None:
        print(f'  {c}')
      elif explain:
        print(f'  ok ({how}): {c}')
  return 1 if found else 0


if __name__ == '__main__':
  sys.exit(main())
