"""Ground truth for the tests and benchmarks (needs the `torch` extra).

- `torch_reference`: the official PyTorch SGE and SGE-ResNets, re-typed
  line for line; what the parity tests and benchmarks compare with.
"""
