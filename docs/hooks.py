"""MkDocs hooks (mkdocs.yml `hooks:`): the files that live outside docs/.

README.md (the site's home page), CHANGELOG.md and the quick-start notebook
stay at the repository root, where a checkout shows them; this hook adds them
to the site under the same paths. Links are written for the repository's
own view (a guide links `../README.md`, the README links `docs/core.md`), and
rewritten here for the site's layout, where docs/ is the root.
"""

from __future__ import annotations

import pathlib
import re

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUTSIDE = ('README.md', 'CHANGELOG.md', 'notebooks/quickstart.ipynb', 'notebooks/quickstart.py')
LINK = re.compile(r'\]\((?!https?:|#)([^)\s]+)\)')   # ](target) of an inline link


def on_files(files, config):
  for name in OUTSIDE:
    files.append(File.generated(config, name, abs_src_path=str(ROOT / name)))
  return files


def on_page_markdown(markdown, page, config, files):
  if page.file.src_uri in OUTSIDE:     # a root file: docs/x.md is x.md in the site
    fix = lambda target: target.removeprefix('docs/')
  else:                                # a page under docs/: one '../' too many outside it
    up = '../' * (page.file.src_uri.count('/') + 1)
    fix = lambda target: ('../' * (len(up) // 3 - 1) + target[len(up):]
                          if target.startswith(up) else target)
  return LINK.sub(lambda m: f']({fix(m.group(1))})', markdown)
