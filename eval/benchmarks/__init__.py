"""One module per benchmark, each declaring a `Benchmark` (eval/spec.py); `eval/registry.py` finds and imports them."""
