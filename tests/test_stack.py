"""What the supported stack needs from the code: the interpreter's numpy bound (triton 3.6 cannot run on
numpy 2.4) is a clear error naming the fix, on exactly the versions that need it."""

import sys

import numpy
import pytest
import torch
import triton

import snn_triton as st
from snn_triton.kernels import common


@pytest.mark.parametrize(
    ("triton_version", "numpy_version", "refused"),
    [("3.6.0", "2.4.6", True), ("3.6.0", "2.3.5", False), ("3.8.0", "2.4.6", False), ("3.9.0", "2.5.0", False)],
)
def test_interpreter_refuses_a_numpy_it_cannot_run_on(monkeypatch, triton_version, numpy_version, refused):
    if not common.INTERPRETED:
        pytest.skip("the kernels run compiled here, not under the interpreter")
    monkeypatch.setattr(triton, "__version__", triton_version)
    monkeypatch.setattr(numpy, "__version__", numpy_version)
    x = torch.randn(3, 5) + 1.0
    if refused:
        with pytest.raises(RuntimeError, match=r"numpy < 2\.4.*pip install 'numpy<2\.4'"):
            st.lif_scan(x, backend="triton")
    else:
        assert torch.equal(st.lif_scan(x, backend="triton"), st.lif_scan(x, backend="torch"))


def test_lean_on_a_torch_older_than_it_needs_leaves_the_model_and_says_why(monkeypatch):
    lean = sys.modules["snn_triton.lean"]  # st.lean, the function, shadows the module's name

    monkeypatch.setattr(lean, "TORCH_VERSION", (2, 11))
    lean.warn_lean_unsupported.cache_clear()
    net = torch.nn.Sequential(st.LIF(), torch.nn.Linear(6, 2))
    classes = [type(m) for m in net]
    with pytest.warns(UserWarning, match="older than 2.14"):
        assert st.lean(net) is net
    assert [type(m) for m in net] == classes
    report = st.lean_report(net)
    assert not report.rewritten and all("need torch >= 2.14" in e.reason for e in report.left)
    lean.warn_lean_unsupported.cache_clear()
