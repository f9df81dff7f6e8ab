<<<<<<< HEAD
"""Experiments and benchmarks of pckeypoints: run them as ``python -m experiments.<name>`` from the repository root."""
=======
"""Experiments: the scripts behind the result tables (run as ``python -m experiments.<script>`` from the repository root)."""
>>>>>>> trainer
