"""The FLOPs columns of `sparsejax report`: a run's training and inference
FLOPs relative to the dense model, from row['flops'] (its summary.json
`flops` block, counted as the RigL paper counts them: `sparsejax.core.flops`).
Host-side only, as the rest of the report."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

FLOPS_COLUMNS = (('train FLOPs (x dense)', 'train_ratio'),
                 ('inference FLOPs (x dense)', 'inference_ratio'))
FLOPS_NOTE = (' FLOPs: means over finished runs, relative to the dense model; training counts'
              ' 3x the forward FLOPs per example and step, with the dense weight gradient on'
              ' the steps whose update reads it (Evci et al. 2020, RigL, Appendix H).')


def _ok(row: dict[str, Any]) -> bool:
  return row.get('status', 'ok') == 'ok'


def flops_value(row: dict[str, Any], key: str = 'train_ratio') -> float | None:
  """row['flops'][key] (a ratio to dense, or a total), None if not recorded."""
  v = (row.get('flops') or {}).get(key)
  return None if v is None else float(v)


def has_flops(rows: Iterable[dict[str, Any]]) -> bool:
  """Whether any finished row records its training FLOPs."""
  return any(flops_value(r) is not None for r in rows if _ok(r))


def flops_means(members: Iterable[dict[str, Any]]) -> list[float | None]:
  """Per FLOPS_COLUMNS, the mean over the finished members that record it."""
  members = [r for r in members if _ok(r)]
  out = []
  for _, key in FLOPS_COLUMNS:
    vals = [v for v in (flops_value(r, key) for r in members) if v is not None]
    out.append(float(np.mean(vals)) if vals else None)
  return out


def flops_cells(members: Iterable[dict[str, Any]]) -> list[str]:
  """The table cells of FLOPS_COLUMNS: '0.420x', '-' where none recorded."""
  return ['-' if v is None else f'{v:.3f}x' for v in flops_means(members)]
