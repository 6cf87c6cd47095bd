"""Every decimal number an experiment README quotes is in that folder's CSV
files (or declared there not to be a result): experiments/check_numbers.py
over the recorded folders. Reads text files only; no training."""

import importlib.util
import pathlib
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / 'experiments'

_spec = importlib.util.spec_from_file_location('check_numbers', EXPERIMENTS / 'check_numbers.py')
check_numbers = importlib.util.module_from_spec(_spec)
sys.modules.setdefault('check_numbers', check_numbers)   # dataclasses look the module up
_spec.loader.exec_module(check_numbers)

# Folders whose READMEs may quote numbers in no CSV (none at present).
EXEMPT = ()

CHECKED = ('dst_lenet_mnist', 'dst_mnist1d', 'han_lenet_mnist', 'lm_prune_text',
           'gpt2_small_fsdp', 'lottery_lenet_mnist', 'pai_lenet_mnist', 'lottery_mnist1d',
           'peft_minilm',
           'peft_mnist_transfer', 'prune_minilm', 'recovery_lenet_mnist', 'rigl_lenet_mnist',
           'smollm2_prune', 'snip_lenet_mnist', 'sweep_resume_demo')


@pytest.mark.parametrize('name', CHECKED)
def test_readme_numbers_are_in_the_csv_files(name):
  candidates = check_numbers.check_folder(EXPERIMENTS / name)
  assert not candidates, f'{name}: README numbers in no CSV:\n' + '\n'.join(map(str, candidates))


def test_every_folder_with_a_readme_is_checked_or_exempt():
  folders = {p.parent.name for p in EXPERIMENTS.glob('*/README.md')}
  assert folders <= set(CHECKED) | set(EXEMPT), sorted(folders - set(CHECKED) - set(EXEMPT))


def test_the_checker_flags_a_number_that_is_in_no_csv(tmp_path):
  (tmp_path / 'results.csv').write_text('arm,mean,std\ndense,0.97512,0.0021\n')
  (tmp_path / 'README.md').write_text(
      '| arm | paper | ours |\n|---|---|---|\n| dense | 99.1 | 97.51 ± 0.21 |\n\n'
      'Error 2.49%, +0.36 over the rest; `lr 0.123`; 7.5 min.\n'
      '<!-- check_numbers: not results: 1.2 (a setting) -->\nlr 1.2.\n')
  assert [c.number for c in check_numbers.check_folder(tmp_path)] == ['+0.36']
