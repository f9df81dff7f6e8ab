"""Experiments and benchmarks of pckeypoints: run them as ``python -m experiments.<name>`` from the repository root."""
