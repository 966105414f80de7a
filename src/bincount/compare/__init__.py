"""Comparing finished runs: ``bincount runs`` (find the best run) and ``bincount compare`` (is it really better?).

The first report compared its models by hand (classification reports, confusion matrices, a McNemar
test); these commands do the same from the files every run leaves behind (``metrics.json``,
``predictions.csv``, ``.hydra/``), without a dashboard. Nothing here imports torch: reading a few JSON
and CSV files must stay instant.
"""
