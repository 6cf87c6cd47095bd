"""Per-layer tables of a checkpoint: shape, active weights, density, pattern.

Works on a raw orbax restore (no model or config needed): the masks are the
bool leaves of the optimizer state; each is matched to the param whose path
it ends with. Params without a mask are reported from their non-zeros.
"""

from __future__ import annotations

import pathlib

import numpy as np

from sparsejax.core import tree as tree_lib
from sparsejax.train import checkpoint as ckpt_lib


def resolve(path) -> pathlib.Path:
  """A workdir, its checkpoints/steps folder or a step folder -> a step folder."""
  path = pathlib.Path(path).absolute()
  if not path.exists():
    raise ckpt_lib.CheckpointError(f'{path} does not exist')
  for candidate in (path / 'checkpoints' / 'steps', path / 'steps', path):
    if candidate.is_dir():
      steps = sorted((int(p.name) for p in candidate.iterdir()
                      if p.is_dir() and p.name.isdigit()), reverse=True)
      if steps:
        return candidate / str(steps[0])
  return path


def detect_pattern(mask: np.ndarray) -> str:
  """'dense', 'N:M' (along the input axis), 'columns', 'rows' or 'unstructured'."""
  if mask.all():
    return 'dense'
  if mask.ndim >= 2:
    moved = np.moveaxis(mask, -2, -1)
    for m in (4, 8, 2, 16):
      if moved.shape[-1] % m == 0:
        groups = moved.reshape(*moved.shape[:-1], -1, m).sum(-1)
        if np.all(groups == groups.flat[0]) and 0 < groups.flat[0] < m:
          return f'{int(groups.flat[0])}:{m}'
    cols = mask.reshape(-1, mask.shape[-1])
    if np.all(cols.all(0) | ~cols.any(0)):
      return 'columns'
    rows = np.moveaxis(mask, -2, 0).reshape(mask.shape[-2], -1)
    if np.all(rows.all(1) | ~rows.any(1)):
      return 'rows'
  return 'unstructured'


def layer_table(state) -> list[dict]:
  """Rows for every param leaf of a restored TrainState-like tree."""
  params = state['params'] if isinstance(state, dict) else state[1]
  opt_state = state.get('opt_state') if isinstance(state, dict) else state[3]
  param_items = tree_lib.leaves_with_paths(params)
  masks = {p: np.asarray(m) for p, m in tree_lib.leaves_with_paths(opt_state)
           if getattr(m, 'dtype', None) == np.bool_}
  packed = {p[:-len('/bits')]: np.asarray(m) for p, m in tree_lib.leaves_with_paths(opt_state)
            if p.endswith('/bits') and getattr(m, 'dtype', None) == np.uint8}  # pack_masks
  rows = []
  for path, p in param_items:
    p = np.asarray(p)
    mask = next((m for mp, m in masks.items()
                 if m.shape == p.shape and (mp == path or mp.endswith('/' + path))), None)
    if mask is None:
      mask = next((np.unpackbits(m, count=p.size).reshape(p.shape).astype(bool)
                   for mp, m in packed.items()
                   if m.size == -(-p.size // 8) and (mp == path or mp.endswith('/' + path))),
                  None)
    source = 'mask'
    if mask is None:
      mask, source = p != 0, 'nonzeros'
    rows.append({'path': path, 'shape': tuple(p.shape), 'active': int(mask.sum()),
                 'total': int(mask.size), 'density': float(mask.mean()) if mask.size else 1.0,
                 'pattern': detect_pattern(mask) if p.ndim >= 2 else 'dense',
                 'source': source, 'masked': source == 'mask'})
  return rows


def format_table(rows: list[dict]) -> str:
  lines = ['| leaf | shape | active | total | density | pattern |',
           '|---|---|---|---|---|---|']
  for r in rows:
    shape = 'x'.join(str(d) for d in r['shape'])
    lines.append(f"| {r['path']} | {shape} | {r['active']:,} | {r['total']:,} | "
                 f"{r['density']:.4f} | {r['pattern']}{'' if r['masked'] else ' (no mask)'} |")
  masked = [r for r in rows if r['masked']]
  if masked:
    a, t = sum(r['active'] for r in masked), sum(r['total'] for r in masked)
    lines.append(f'| prunable total | | {a:,} | {t:,} | {a / t:.4f} | |')
  a, t = sum(r['active'] for r in rows), sum(r['total'] for r in rows)
  lines.append(f'| all params | | {a:,} | {t:,} | {a / t:.4f} | |')
  return '\n'.join(lines)


def inspect(path) -> str:
  step_dir = resolve(path)
  state = ckpt_lib.restore_raw(step_dir)
  return f'{step_dir}\n\n' + format_table(layer_table(state))
