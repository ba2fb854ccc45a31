"""Guards for the CPU CI environment (README's install line): the wrong torch or a CUDA torchvision breaks image
processing."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytestmark = pytest.mark.skipif(not os.environ.get("CI"), reason="CI environment guard")


def test_torch_is_the_cpu_build():
    import torch

    assert torch.__version__.endswith("+cpu"), torch.__version__


@pytest.mark.parametrize("package", ["torchvision", "vllm"])
def test_gpu_only_packages_are_absent(package):
    assert importlib.util.find_spec(package) is None, f"{package} must not be installed in the CPU environment"
