"""numba kernels: frame parsing, capture-file walking and the flow engine (no I/O, no Python objects)."""
