"""Sparse export: compact files, loaded back, the same outputs."""

import json
import pathlib

import numpy as np
import pytest

from sparsejax import config as config_lib, experiment
from sparsejax.programs import export, export_formats

ROOT = pathlib.Path(__file__).resolve().parent.parent


def train(workdir, **over):
  c = config_lib.apply_overrides(config_lib.load_config(ROOT / 'configs' / 'mnist1d_mlp.py'), {
      'train.steps': 30, 'train.eval_every': 30, 'train.checkpoint_every': 30,
      'model.options.hidden': 64, **over})
  experiment.train_and_evaluate(c, workdir, progress=False)


def test_csr_export_at_90_percent(tmp_path):
  train(tmp_path, **{'sparsity': 0.9, 'pruning.schedule': 'oneshot', 'pruning.at_step': 10})
  rep = export.export(tmp_path, 'csr')
  assert set(rep['leaves'].values()) == {'csr', 'dense'}
  assert rep['ratio'] < 0.3          # 10% of the weights, with uint8/uint16 indices
  diff = experiment.verify_export(tmp_path, tmp_path / 'export_csr')
  assert diff < 1e-5
  # the same unstructured run cannot be written as N:M: an error naming a leaf, no file
  with pytest.raises(export.ExportError, match="'hidden_0/kernel'.*not N:M"):
    export.export(tmp_path, 'nm')
  assert not (tmp_path / 'export_nm').exists()
  params, _ = export.load(tmp_path / 'export_csr', as_sparse=False)
  meta = json.loads((tmp_path / 'export_csr' / 'export.json').read_text())
  assert meta['leaves']['hidden_1/kernel']['kind'] == 'csr'
  assert int(np.count_nonzero(np.asarray(params["hidden_1"]["kernel"]))) <= 410   # 4096 - round(0.9 * 4096)


def test_nm_export_is_exact(tmp_path):
  train(tmp_path, **{'pruning.schedule': 'oneshot', 'pruning.at_step': 10,
                     'pruning.pattern': 'nm', 'pruning.pattern_options': {'n': 2, 'm': 4}})
  rep = export.export(tmp_path, 'nm')
  assert rep['leaves']['hidden_1/kernel'] == 'nm'
  assert experiment.verify_export(tmp_path, tmp_path / 'export_nm') == 0.0
  assert rep['ratio'] < 0.6          # half the values plus 2 bits each


@pytest.mark.parametrize('bits', [1, 2, 3, 4])
def test_bit_packing_roundtrip(bits):
  values = np.random.default_rng(bits).integers(0, 2 ** bits, 1001).astype(np.uint8)
  packed = export_formats._pack_bits(values, bits)
  np.testing.assert_array_equal(export_formats._unpack_bits(packed, bits, len(values)), values)


def test_unknown_format(tmp_path):
  with pytest.raises(ValueError, match="'coo'"):
    export.export(tmp_path, 'coo')
