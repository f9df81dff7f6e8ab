"""Experiments: the scripts behind the result tables (run as ``python -m experiments.<script>`` from the repository root)."""
