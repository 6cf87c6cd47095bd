"""`core.imports.resolve`: the one lookup behind every registry (a name from
the table, an import path, or one error with the close matches)."""

import optax
import pytest

from sparsejax.core import imports
from sparsejax.core.imports import Namespace, UnknownName, resolve

TABLE = {'magnitude': abs, 'gradient': max, 'random': min}


def test_a_registered_name():
  assert resolve('gradient', TABLE, 'criterion') is max


def test_an_import_path():
  assert resolve('optax:sgd', TABLE, 'criterion') is optax.sgd
  assert resolve('sparsejax.core.imports:resolve', TABLE, 'criterion') is resolve
  with pytest.raises(ValueError, match="criterion 'no_such_module_xyz:f': cannot import"):
    resolve('no_such_module_xyz:f', TABLE, 'criterion')
  with pytest.raises(ValueError, match="'optax' has no 'sgdd'"):
    resolve('optax:sgdd', TABLE, 'criterion')


def test_an_unknown_name_lists_close_matches():
  with pytest.raises(UnknownName) as e:
    resolve('magnitud', TABLE, 'criterion', note='see AtInit')
  msg = str(e.value)
  assert msg.startswith("unknown criterion 'magnitud' (did you mean 'magnitude'?); choose from "
                        "['gradient', 'magnitude', 'random'] or give an import path")
  assert msg.endswith('(see AtInit)')
  assert isinstance(e.value, ValueError)
  assert (e.value.kind, e.value.name, e.value.near) == ('criterion', 'magnitud', ['magnitude'])
  with pytest.raises(UnknownName, match=r"unknown criterion None; choose from"):
    resolve(None, TABLE, 'criterion')
  with pytest.raises(UnknownName, match=r"unknown criterion \['x'\]"):
    resolve(['x'], TABLE, 'criterion')     # unhashable: not a name


def test_a_module_as_table():
  ns = Namespace(optax)
  assert resolve('adam', ns, 'optimizer') is optax.adam
  assert 'adam' in ns and '_src' not in list(ns)
  with pytest.raises(UnknownName, match="did you mean 'adam'"):
    resolve('adamm', ns, 'optimizer')


def test_the_registries_share_it():
  import sparsejax as sj
  from sparsejax import data, models
  from sparsejax.core import allocation
  for call, match in ((lambda: sj.make_schedule('rigll'), "unknown schedule 'rigll' .*'rigl'"),
                      (lambda: sj.get_criterion('snp'), "unknown pruning criterion 'snp'.*'snip'"),
                      (lambda: sj.make_pattern('blok'), "unknown sparsity pattern 'blok'.*'block'"),
                      (lambda: allocation.resolve_method('ekr'), "unknown allocation 'ekr'.*'erk'"),
                      (lambda: models.model_class('mpl'), "unknown model 'mpl'.*'mlp'"),
                      (lambda: data.loader('mnits'), "unknown dataset 'mnits'.*'mnist'")):
    with pytest.raises(ValueError, match=match):
      call()
  assert models.model_class('sparsejax.models.mlp:MLP') is models.MLP
  assert data.loader('sparsejax.data.mnist1d:dataset') is data.LOADERS['mnist1d']
  assert imports.close_matches('erk', ['er', 'erk', 'global']) == ['erk', 'er']
