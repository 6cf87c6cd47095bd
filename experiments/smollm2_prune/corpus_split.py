"""The corpus split's sizes (sparsejax.data.corpus: King James Bible, Old
Testament = calibration, New Testament = eval) -> results/corpus_split.csv:
books, characters, lines, whitespace words, SmolLM2 tokens (its GGUF
tokenizer, no special tokens added), windows of 256 tokens, and the SHA-256 of
each part's UTF-8 text, so a later change to the cleaning shows.

  .venv/bin/python experiments/smollm2_prune/corpus_split.py
"""

from __future__ import annotations

import csv
import hashlib
import pathlib

from sparsejax.data import corpus
from sparsejax.models import pretrained

HERE = pathlib.Path(__file__).resolve().parent


def main() -> None:
  split = corpus.load_split()
  tokenizer, _, _ = pretrained.load_tokenizer('smollm2')
  out = HERE / 'results' / 'corpus_split.csv'
  out.parent.mkdir(exist_ok=True)
  with out.open('w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['part', 'books', 'first_book', 'last_book', 'chars', 'lines', 'words',
                     'smollm2_tokens', 'windows_256', 'sha256', 'source', 'rule'])
    for part in corpus.PARTS:
      text = split.part(part)
      books = getattr(split, f'{part}_books')
      tokens = len(tokenizer.encode(text).ids)
      writer.writerow([part, len(books), books[0], books[-1], len(text), text.count('\n'),
                       len(text.split()), tokens, tokens // 256,
                       hashlib.sha256(text.encode('utf-8')).hexdigest(), split.source.split(' ')[0],
                       split.rule])
  print(out.read_text())


if __name__ == '__main__':
  main()
