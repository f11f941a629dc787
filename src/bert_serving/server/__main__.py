"""``python -m bert_serving.server ...``: the same as ``bert-serving-start ...`` (where the console
scripts are not installed, e.g. with the sources on PYTHONPATH)."""

from .cli import main

main()
