"""JAX's persistent compilation cache, which the command line turns on."""

from __future__ import annotations

import os


def enable_compilation_cache() -> str | None:
  """Turn on JAX's persistent compilation cache for command-line runs, so a
  second run (a sweep point, a lottery level in its own process, a resume)
  loads its programs instead of compiling them again. The directory is
  $JAX_COMPILATION_CACHE_DIR if set, else $SPARSEJAX_CACHE_DIR, else
  ~/.cache/sparsejax/jax; SPARSEJAX_CACHE_DIR=off turns it off. Returns the
  directory used (None: off)."""
  import jax
  where = os.environ.get('JAX_COMPILATION_CACHE_DIR') or os.environ.get('SPARSEJAX_CACHE_DIR')
  if where == 'off':
    return None
  if not where:
    base = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
    where = os.path.join(base, 'sparsejax', 'jax')
  jax.config.update('jax_compilation_cache_dir', where)
  # our programs compile in well under JAX's default 1 s threshold
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)
  return where
