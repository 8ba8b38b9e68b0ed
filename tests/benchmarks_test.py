"""The benchmark harness runs and prints its JSON line (tiny settings)."""

import json
import os
import subprocess
import sys

import pytest

from catdog_jax import train
from tests import helpers

pytestmark = pytest.mark.slow

REPO = helpers.REPO
TINY = [
  '--config=configs/base.py',
  '--config.data.image_size=32',
  '--config.batch_size=8',
  '--config.model.conv_features=(4,8)',
  '--config.model.dense_features=(16,)',
  '--steps=2',
]


def run_script(script, *args, tiny=True) -> list[dict]:
  """The JSON lines a benchmark script prints (given TINY's settings where
  it trains or times a model)."""
  result = subprocess.run(
    [sys.executable, f'benchmarks/{script}', *(TINY if tiny else ()), *args],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  return [json.loads(line) for line in lines if line.startswith('{')]


def run_benchmark(*args):
  return run_script('throughput.py', '--warmup=1', *args)[-1]


def test_step_benchmark_reports_images_per_second():
  result = run_benchmark()
  assert result['mode'] == 'steps' and result['batch_size'] == 8
  assert result['train_images_per_sec'] > 0
  assert result['eval_images_per_sec'] > 0
  assert {'device', 'image_size', 'dtype'} <= set(result)
  assert result['train_minor_faults_per_step'] >= 0
  # CPU seconds as the kernel counts them, in ticks: a step of a few
  # milliseconds may read 0 (it did in CI), never more than every core's
  # whole time.
  step_seconds = result['batch_size'] / result['train_images_per_sec']
  cpu_bound = 2 * os.cpu_count() * step_seconds + 0.01
  assert 0 <= result['train_user_seconds_per_step'] <= cpu_bound
  assert result['allocator'] in ('mimalloc', 'system')


def test_input_benchmark_reads_a_folder(flat_dataset):
  result = run_benchmark(f'--images={flat_dataset}')
  assert result['mode'] == 'input' and result['images'] == 80
  assert result['input_images_per_sec'] > 0
  assert result['end_to_end_train_images_per_sec'] > 0


def test_formulations_compares_each_variant_with_current():
  (result,) = run_script('formulations.py')
  for variant in ('current', 'xla_maxpool', 'xla_cpu_default'):
    assert result[f'{variant}_train_images_per_sec'] > 0
    assert result[f'{variant}_eval_images_per_sec'] > 0
  assert result['current_over_current_train'] == 1.0


def test_conv_layers_times_each_distinct_conv():
  layers = run_script('conv_layers.py')
  assert [layer['name'] for layer in layers] == ['conv1', 'conv2']
  inputs = [layer['input'] for layer in layers]
  assert inputs == [[8, 32, 32, 3], [8, 16, 16, 4]]
  for layer in layers:
    for options in ('current', 'xla_default'):
      for name in ('forward', 'input_grad', 'weight_grad'):
        assert layer[f'{options}_{name}_ms'] > 0


def test_lite_layers_times_each_distinct_layer_both_ways():
  rows = run_script(
    'lite_layers.py', '--batch=2', '--image_size=32', '--steps=1', tiny=False
  )
  kinds = {(row['layer'], row['kernel'], row['stride']) for row in rows}
  assert kinds == {('pointwise', 1, 1), ('depthwise', 3, 1),
                   ('depthwise', 3, 2), ('depthwise', 5, 1),
                   ('depthwise', 5, 2)}  # fmt: skip
  assert {row['pass'] for row in rows} == {'forward', 'gradient'}
  assert all(row['ours_ms'] > 0 and row['xla_conv_ms'] > 0 for row in rows)


def test_lite_against_pytorch_reports_each_side_and_the_ratios():
  pytest.importorskip('torch')
  # Forward only: the two train steps' compiles take a minute.
  rows = run_script(
    'lite_vs_torch.py', '--batch_sizes=2', '--image_size=32', '--steps=1',
    '--passes=forward', tiny=False,
  )  # fmt: skip
  *timed, summary = rows
  assert {(r['side'], r['pass']) for r in timed} == {
    ('jax', 'forward'),
    ('pytorch', 'forward'),
  }
  assert summary['forward_ratio_jax_to_pytorch'] > 0


TINY_SET = [
  'data.image_size=32',
  'batch_size=8',
  'model.conv_features=(4,8)',
  'model.dense_features=(16,)',
]


def test_host_benchmark_times_each_path_by_batch_size(flat_dataset):
  rows = run_script(
    'throughput.py', '--mode=host', f'--images={flat_dataset}',
    '--batch_sizes=4,8', '--decode_workers=1', '--warmup=1',
  )  # fmt: skip
  paths = [(r['path'], r['batch_size']) for r in rows]
  assert paths == [
    ('cached', 4), ('cached', 8), ('decoded', 4), ('decoded', 8),
    ('decoded_processes', 4), ('decoded_processes', 8),
  ]  # fmt: skip
  assert all(r['host_images_per_sec'] > 0 for r in rows)


def test_augment_benchmark_times_each_training_size():
  # A ResNet: the seed's CNN takes one image size only.
  rows = run_script(
    'throughput.py', '--config=configs/quick_cpu.py', '--warmup=1',
    '--steps=2', '--mode=augment', '--config.batch_size=4',
    '--config.data.image_size=32', '--config.progressive_sizes=(24,32)',
    '--config.model.widths=(4,4,8,8)', '--config.augment.blur=1.0',
    tiny=False,
  )  # fmt: skip
  assert [row['train_size'] for row in rows] == [24, 32]
  for row in rows:
    assert row['mode'] == 'augment'
    for key in (
      'train_step_seconds',
      'augment_seconds',
      'scale_and_translate_crop_seconds',
    ):
      assert row[key] > 0, (key, row)


def test_roofline_estimates_each_config():
  result = subprocess.run(
    [sys.executable, 'benchmarks/roofline.py', '--configs=base,gpu',
     '--set=data.image_size=32', '--set=batch_size=8', '--markdown'],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert lines[0].startswith('| config | dtype |') and len(lines) == 4
  assert lines[2].startswith('| `base` | float32 |')
  assert lines[3].startswith('| `gpu` | bfloat16 |')


def test_device_measurement_prints_rows_to_paste(flat_dataset):
  """On the CPU here: the same script a first GPU session runs."""
  result = subprocess.run(
    [sys.executable, 'benchmarks/measure_device.py', '--configs=base',
     f'--images={flat_dataset}', '--batch_sizes=8', '--decode_workers=1',
     '--steps=1',
     *[f'--set={pair}' for pair in TINY_SET]],
    cwd=REPO, capture_output=True, text=True, timeout=600,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [line for line in result.stdout.splitlines() if line.startswith('|')]
  assert rows[0].startswith('| what | config | measured images/s |')
  assert any(r.startswith('| train step, batch 8 | `base` |') for r in rows)
  assert any(r.startswith('| host feed, cached, batch 8 |') for r in rows)
  # No estimate is made up for a device the roofline does not cover.
  assert 'no estimate for this device' in result.stdout


def test_eval_sizes_evaluates_each_size_as_trained_and_recalibrated(
  flat_dataset, folder_dataset, tmp_path
):
  config = helpers.tiny_recipe_config(
    flat_dataset, num_train_steps=10, ema_decay=0.0
  )
  train.train_and_evaluate(config, tmp_path)
  rows = subprocess.run(
    [sys.executable, 'benchmarks/eval_sizes.py', f'--workdir={tmp_path}',
     '--sizes=32,40', '--recalibrate_bn_batches=2', '--splits=test',
     f'--images={folder_dataset}'],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert rows.returncode == 0, rows.stderr[-3000:]
  rows = [json.loads(line) for line in rows.stdout.strip().splitlines()]
  assert [(row['size'], row['statistics']) for row in rows] == [
    (32, 'as_trained'), (32, 'recalibrated'),
    (40, 'as_trained'), (40, 'recalibrated'),
  ]  # fmt: skip
  # At the training size, as trained, it is the run's own validation and test.
  for split in ('val', 'test'):
    with open(tmp_path / f'eval_{split}.json') as f:
      assert rows[0][split]['log_loss'] == pytest.approx(
        json.load(f)['log_loss']
      )
  assert rows[1]['val']['log_loss'] != rows[0]['val']['log_loss']
  for row in rows:
    # The temperature is fitted on validation: its log-loss can only fall.
    val = row['val']
    assert val['calibrated_log_loss'] <= val['log_loss'] + 1e-9
    assert row['images']['accuracy'] > 0.0
    assert set(row['images']['recall_per_class']) == {'cat', 'dog'}


def test_eta_accuracy_sets_each_eta_against_the_time_left(
  flat_dataset, tmp_path
):
  log = tmp_path / 'train.log'
  flags = helpers.tiny_flags(flat_dataset, num_train_steps=20)
  with open(log, 'w') as stderr:
    subprocess.run(
      [sys.executable, 'main.py', *flags, f'--workdir={tmp_path}'],
      cwd=REPO, stderr=stderr, check=True, timeout=300,
    )  # fmt: skip
  (result,) = run_script(
    'eta_accuracy.py', f'--log={log}', f'--workdir={tmp_path}', tiny=False
  )
  rows = result['lines']
  assert [row['step'] for row in rows] == [5, 10, 15, 20]
  times_left = [row['real_s'] for row in rows]
  assert times_left == sorted(times_left, reverse=True) and times_left[-1] > 0
  for row in rows:  # Seconds are printed to a tenth.
    error = (row['eta_s'] - row['real_s']) / row['real_s']
    assert row['error'] == pytest.approx(error, abs=0.1 / row['real_s'])
  assert result['worst'] is None  # No line had a minute left.


def test_oxford_breeds_counts_each_breed(tmp_path):
  predictions = tmp_path / 'oxford.csv'
  predictions.write_text(
    'path,predicted,prob_dog,logit\n'
    '/d/cats/Bengal_1.jpg,cat,0.1,-2\n'
    '/d/cats/Bengal_2.jpg,dog,0.9,2\n'
    '/d/cats/Sphynx_1.jpg,cat,0.2,-1\n'
    '/d/dogs/beagle_1.jpg,dog,0.8,1\n'
  )
  (result,) = run_script(
    'oxford_breeds.py', f'--predictions={predictions}', tiny=False
  )
  assert result['breeds'] == {
    'Bengal': {'class': 'cat', 'photos': 2, 'accuracy': 0.5},
    'Sphynx': {'class': 'cat', 'photos': 1, 'accuracy': 1.0},
    'beagle': {'class': 'dog', 'photos': 1, 'accuracy': 1.0},
  }
  assert result['mean_over_breeds'] == {'cat': 0.75, 'dog': 1.0}
