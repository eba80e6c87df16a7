"""Ablation studies: a TOML study file expanded into cells, run on Ray, summarised in a table.

spec (the study file and its checks), grid (cells, tasks, plan), tasks (what a worker runs),
runner (Ray: the only package that imports it), table (mean ± std per cell).
Import the runner explicitly (`from core.studies import runner`): the rest works without Ray.
"""
