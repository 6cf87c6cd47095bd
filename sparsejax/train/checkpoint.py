"""Orbax checkpoints: keep-last-N by step, plus named ones that IMP needs.

A checkpoint holds the whole `TrainState` (params, optimizer state with the
masks inside, step, RNG) and a JSON record (step, data position, settings
hash). Saves are asynchronous and atomic (orbax writes to a temporary
directory and renames it), so a crash or SIGKILL mid-save leaves the previous
checkpoint intact; the leftover temporary directory is reported and removed
on the next start. Restores take an abstract target with shardings, so the
state lands on the current mesh.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
TMP_MARK = '.orbax-checkpoint-tmp'


class CheckpointError(RuntimeError):
  """A checkpoint directory that cannot be used; the message names it."""


def reason(error: BaseException, limit: int = 300) -> str:
  """Why orbax/TensorStore failed, in one short line: the innermost cause's
  message (TensorStore's outer message embeds its whole spec as text)."""
  seen = error
  while (seen.__cause__ or seen.__context__) is not None:
    seen = seen.__cause__ or seen.__context__
  text = ' '.join(str(seen).split())
  for cut in (' See full TensorStore details', '<bound method'):
    text = text.split(cut, 1)[0]
  text = f'{type(seen).__name__}: {text.strip()}'
  return text if len(text) <= limit else text[:limit - 3] + '...'


def abstract_like(tree: PyTree, shardings: PyTree | None = None) -> PyTree:
  """ShapeDtypeStructs (with shardings) for an orbax restore target."""
  if shardings is None:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def partial_entries(directory: pathlib.Path) -> list[pathlib.Path]:
  """Temporary directories left by interrupted saves."""
  if not directory.exists():
    return []
  return sorted(p for p in directory.iterdir() if TMP_MARK in p.name)


class Checkpoints:
  """Step checkpoints under `directory/steps`, named ones under `directory/named`."""

  def __init__(self, directory, keep: int = 3, async_save: bool = True):
    self.directory = pathlib.Path(directory).absolute()
    self.steps_dir = self.directory / 'steps'
    self.named_dir = self.directory / 'named'
    for leftover in partial_entries(self.steps_dir):
      warnings.warn(f'removing {leftover}: a checkpoint save that never finished '
                    '(the run was interrupted while saving); resuming from the last '
                    'complete checkpoint', stacklevel=2)
      if jax.process_index() == 0:
        shutil.rmtree(leftover, ignore_errors=True)
    self.manager = ocp.CheckpointManager(
        self.steps_dir,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save),
        item_names=('state', 'meta'))

  # -- step checkpoints -------------------------------------------------------------
  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state: PyTree, meta: dict, wait: bool = False) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    if wait:
      self.manager.wait_until_finished()

  def restore(self, step: int, abstract_state: PyTree) -> tuple[PyTree, dict]:
    """(state, meta) of `step`; CheckpointError if it cannot be read."""
    path = self.steps_dir / str(step)
    try:
      out = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many kinds; all mean this one is unusable
      raise CheckpointError(
          f'checkpoint {path} could not be restored ({reason(e)}). '
          'It is corrupt, partial, or from a different model or optimizer. Delete that '
          'step directory to resume from an earlier checkpoint, or use a new workdir.') from e
    return out['state'], dict(out['meta'])

  def read_meta(self, step: int) -> dict:
    path = self.steps_dir / str(step) / 'meta'
    try:
      return dict(self.manager.restore(step, args=ocp.args.Composite(
          meta=ocp.args.JsonRestore()))['meta'])
    except Exception as e:
      raise CheckpointError(f'checkpoint metadata {path} could not be read: {reason(e)}') from e

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # -- named checkpoints -----------------------------------------------------------------
  def named_path(self, name: str) -> pathlib.Path:
    return self.named_dir / name

  def has_named(self, name: str) -> bool:
    return (self.named_path(name) / '_CHECKPOINT_METADATA').exists()

  def save_named(self, name: str, tree: PyTree) -> pathlib.Path:
    """Saves `tree` (for example the initial weights) under `name`, synchronously."""
    path = self.named_path(name)
    self.named_dir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
      ckptr.save(path, tree, force=True)
      ckptr.wait_until_finished()
    return path

  def restore_named(self, name: str, abstract: PyTree) -> PyTree:
    path = self.named_path(name)
    if not self.has_named(name):
      raise CheckpointError(f'no named checkpoint {name!r} at {path}')
    try:
      with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, abstract)
    except Exception as e:
      raise CheckpointError(f'named checkpoint {path} could not be restored: '
                            f'{reason(e)}') from e


def restore_raw(path) -> PyTree:
  """A step or named checkpoint's state as numpy arrays, without a target.

  Reads on any machine whatever topology saved it (a pod's checkpoint on a
  laptop), for inspection and comparisons; training restores use a target.
  """
  path = pathlib.Path(path).absolute()
  state_dir = path / 'state' if (path / 'state').is_dir() else path
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)   # orbax warns that a sub-item has no step metadata
  try:
    with ocp.PyTreeCheckpointer() as ckptr:
      tree = ckptr.metadata(state_dir).item_metadata.tree
      restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
      return ckptr.restore(state_dir, args=ocp.args.PyTreeRestore(restore_args=restore_args))
  except Exception as e:
    raise CheckpointError(f'{path} is not a readable checkpoint: {reason(e)}') from e
  finally:
    absl_logger.setLevel(level)
