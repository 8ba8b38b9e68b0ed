"""What a workdir holds: its file names, and JSON in and out of it."""

import json
import os

CONFIG = 'config.json'
DATA_REPORT = 'data_report.json'
EVAL_VAL = 'eval_val.json'
EVAL_TEST = 'eval_test.json'
REPORT = 'report.md'


def write_json(path: str, value) -> None:
  with open(path, 'w') as f:
    json.dump(value, f, indent=2)
    f.write('\n')


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def path(workdir: str, name: str) -> str:
  return os.path.join(workdir, name)
