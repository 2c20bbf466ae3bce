"""The graph, the mapper and the simulator run without torch."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["mapping", "sim", "eventllm.process", "eventllm"])
def test_import_does_not_import_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
