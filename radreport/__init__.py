"""The contract that training, serving and evaluation share.

schema    the dataset rows (MEDIQA 2021 Task 3 form) and their loading/validation
sections  splitting free-text MIMIC-CXR reports and Open-i XML into sections
prompt    the one prompt template used everywhere
modeling  loading a model directory or hub id; building the tiny embedded T5 (build_tiny: its CLI)
generation the one beam-search helper behind offline prediction and the service
config    YAML -> typed frozen dataclasses with `a.b=c` overrides
io        atomic writes
"""
