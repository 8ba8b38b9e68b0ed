"""The benchmark harness runs and prints its JSON line (tiny settings)."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = [
  '--config=configs/base.py',
  '--config.data.image_size=32',
  '--config.batch_size=8',
  '--config.model.conv_features=(4,8)',
  '--config.model.dense_features=(16,)',
  '--steps=2',
  '--warmup=1',
]


def run_benchmark(*args):
  result = subprocess.run(
    [sys.executable, 'benchmarks/throughput.py', *TINY, *args],
    cwd=REPO, capture_output=True, text=True, timeout=300,
  )  # fmt: skip
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


def test_step_benchmark_reports_images_per_second():
  result = run_benchmark()
  assert result['mode'] == 'steps' and result['batch_size'] == 8
  assert result['train_images_per_sec'] > 0
  assert result['eval_images_per_sec'] > 0
  assert {'device', 'image_size', 'dtype'} <= set(result)


def test_input_benchmark_reads_a_folder(flat_dataset):
  result = run_benchmark(f'--images={flat_dataset}')
  assert result['mode'] == 'input' and result['images'] == 80
  assert result['input_images_per_sec'] > 0
  assert result['end_to_end_train_images_per_sec'] > 0
