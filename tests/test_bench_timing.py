"""The benchmark's busy-fraction measurement and its --pack-buckets option, on CPU."""

import pytest
import torch

from rlt.benchmark import build_parser, settings_from_args
from rlt.benchmark.timing import busy_fraction, covered_time


def test_covered_time_is_the_union_of_the_intervals():
    assert covered_time([]) == 0.0
    assert covered_time([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4.0
    assert covered_time([(4, 5), (0, 10)]) == 10.0


def test_busy_fraction_runs_on_the_cpu():
    matrix = torch.randn(64, 64)
    result = busy_fraction(lambda x: (x @ x).relu().sum(), [matrix], device=torch.device("cpu"), calls=2)
    assert 0.0 < result["busy_frac"] <= 1.0
    assert result["kernels_per_call"] >= 3  # matmul, relu, sum


def test_pack_buckets_option_reaches_the_settings():
    parser = build_parser()
    settings = settings_from_args(parser.parse_args(["--device", "cpu", "--pack-buckets", "8", "--busy-fraction"]))
    assert settings.pack_buckets == 8 and settings.busy_fraction
    with pytest.raises(ValueError, match="--pack-buckets must be >= 0"):
        settings_from_args(parser.parse_args(["--device", "cpu", "--pack-buckets", "-2"]))
