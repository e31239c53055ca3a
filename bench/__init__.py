"""Benchmarks: gnj against a PyTorch peer measured in the same run (``make bench``)."""
