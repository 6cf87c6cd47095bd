"""The command line turns on JAX's persistent compilation cache (issue 13.6)."""
import jax

from sparsejax import cli


def test_cache_dir_from_env_and_off_switch(tmp_path, monkeypatch):
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  try:
    monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
    monkeypatch.setenv('SPARSEJAX_CACHE_DIR', 'off')
    assert cli.enable_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir == before[0]
    monkeypatch.setenv('SPARSEJAX_CACHE_DIR', str(tmp_path / 'c'))
    assert cli.enable_compilation_cache() == str(tmp_path / 'c')
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / 'c')
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
    monkeypatch.delenv('SPARSEJAX_CACHE_DIR')
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert cli.enable_compilation_cache() == str(tmp_path / 'xdg' / 'sparsejax' / 'jax')
  finally:
    jax.config.update('jax_compilation_cache_dir', before[0])
    jax.config.update('jax_persistent_cache_min_compile_time_secs', before[1])
