"""benchmarks/bench_llm.py end to end at smoke size on the tiny Llama fixture
(saved with a byte tokenizer): the JAX forward, the torch side skipped where
this interpreter has no torch (or run and agreeing where it has), SparseGPT
over both blocks, and the JSON. Needs safetensors, tokenizers and the KJV
corpus wheel (skipped without them)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip('safetensors.numpy')
pytest.importorskip('tokenizers')

from sparsejax.data import base as data_base, corpus  # noqa: E402
from sparsejax.models import llama_weights as lw  # noqa: E402

from test_perplexity import byte_tokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.mark.extended
def test_smoke_run_on_the_tiny_llama(tmp_path):
  try:
    corpus.kjv_db_path()
  except data_base.DataError as e:
    pytest.skip(str(e))
  params, config = lw.load_hf(ROOT / 'tests' / 'fixtures' / 'tiny_llama')
  folder = lw.save_hf(tmp_path / 'tiny', params, config, tokenizer=byte_tokenizer())
  env = {k: v for k, v in os.environ.items() if k != 'SPARSEJAX_TORCH_PYTHON'}
  out = tmp_path / 'bench.json'
  run = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'bench_llm.py'), '--model', str(folder),
       '--calib-sequences', '2', '--seqlen', '32', '--windows', '2', '--repeats', '2',
       '--json', str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
  assert run.returncode == 0, run.stderr[-3000:]
  got = json.loads(out.read_text())
  assert got['jax']['tokens_per_second_median'] > 0
  assert len(got['jax']['tokens_per_second']) == 2
  assert got['jax']['compile_seconds'] > 0 and got['jax']['peak_rss_mib'] > 0
  if all(importlib.util.find_spec(m) for m in ('torch', 'transformers')):
    assert got['torch']['tokens_per_second_median'] > 0 and got['agreement']['ok']
  else:
    assert 'not installed' in got['torch']['skipped']
    assert 'torch side skipped' in run.stdout
  s = got['sparsegpt']
  assert s['pruned_fraction'] == pytest.approx(0.5) and s['seconds'] > 0
  assert s['matrices'] == 14 and s['blocks'] == 2 and s['calibration_shape'] == [2, 32]
  assert got['settings']['tokens_per_pass'] == 64 and got['command'].endswith(str(out))
  assert got['versions']['jax'] and got['machine']['cpu_count'] == os.cpu_count()


def test_bad_input_is_one_error_line(tmp_path):
  run = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_llm.py'),
                        '--windows', '3', '--batch', '2'], capture_output=True, text=True)
  assert run.returncode == 1
  assert run.stderr.strip() == 'bench_llm: error: --windows 3 is not a multiple of --batch 2'
