"""Each shipped CPU config, trained end to end on its `:tiny` variant
(configs/common.py: 32 px, 6 steps) with its report, then predicted and
evaluated: flax's examples run their default config on fake data the same
way. The variants keep each config's model, recipe and code paths
(progressive sizes, whitened stem, oneDNN where it runs, EMA, probe or
zero-shot, pretrained Lite0 weights from the installed package)."""

import importlib
import os

import numpy as np
import pytest

from catdog_jax import fileio
from catdog_jax import workdir as workdir_lib
from catdog_jax.evaluation import predict

# probe_resnet50 and the finetune_* configs need a downloaded file; gpu,
# tpu and lite2_gpu are lowered for their accelerators (lowering_test.py).
CPU_CONFIGS = [
  'quick_cpu',
  'fast_cpu',
  'seed_cnn_tuned',
  'zeroshot_lite0',
  'probe_lite0',
  'probe_lite2',
  'lite0_cpu',
]


@pytest.mark.parametrize('name', CPU_CONFIGS)
def test_a_shipped_cpu_config_trains_predicts_evaluates_and_reports(
  name, flat_dataset, tiny_runs
):
  workdir = tiny_runs(name)  # Trained through the train mode.
  test = fileio.read_json(workdir_lib.path(workdir, workdir_lib.EVAL_TEST))
  assert test['num_examples'] > 0

  rows, skipped = predict.predict(workdir, flat_dataset)
  assert not skipped and len(rows) == len(os.listdir(flat_dataset))
  assert all(0 <= row['prob_dog'] <= 1 for row in rows)
  result, _ = predict.evaluate_folder(workdir, flat_dataset)
  assert result['num_examples'] == len(rows)
  labels = [row['path'].split('/')[-1].startswith('dog') for row in rows]
  predicted = [row['prob_dog'] >= 0.5 for row in rows]
  assert result['accuracy'] == pytest.approx(
    np.mean(np.equal(labels, predicted))
  )
  assert predict.regenerate_report(workdir).endswith(workdir_lib.REPORT)


def test_an_unknown_variant_is_refused():
  with pytest.raises(ValueError, match="unknown config variant 'huge'"):
    importlib.import_module('configs.quick_cpu').get_config('huge')
