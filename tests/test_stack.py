"""What the supported stack needs from the code: the interpreter's numpy bound (triton 3.6 cannot run on
numpy 2.4) is a clear error naming the fix, on exactly the versions that need it; and on a torch older
than 2.13 the lean layers keep less eager and compile as the layers they replace."""

import sys

import numpy
import pytest
import torch
import triton

import snn_triton as st
from snn_triton.kernels import common


@pytest.mark.parametrize(
    ("triton_version", "numpy_version", "refused"),
    [
        ("3.6.0", "2.4.6", True),
        ("3.6.0", "2.3.5", False),
        ("3.7.0", "2.4.6", False),
        ("3.8.0", "2.4.6", False),
        ("3.9.0", "2.5.0", False),
    ],
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


def small_lean_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        st.LIF(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 10),
    )


def graph_calls(model, x):
    """What dynamo records model(x) calling, in order: the targets of its graphs' calls."""
    torch._dynamo.reset()
    graphs = torch._dynamo.explain(model)(x).graphs
    return [str(n.target) for g in graphs for n in g.graph.nodes if n.op.startswith("call")]


def test_lean_on_a_torch_older_than_2_14_keeps_less_eager_and_compiles_as_the_plain_layers(monkeypatch):
    """Eager, the lean layers keep less on every supported torch; under torch.compile on a torch older
    than 2.13 (whose dynamo and inductor fail on them) they trace as the layers they replace, op for op,
    with a warning once from st.lean."""
    from test_lean_backward import saved_bytes

    lean = sys.modules["snn_triton.lean"]  # st.lean, the function, shadows the module's name
    monkeypatch.setattr(lean, "TORCH_VERSION", (2, 11))
    lean.warn_compiled_as_replaced.cache_clear()
    plain, leaned = small_lean_net(), small_lean_net()
    with pytest.warns(UserWarning, match="under torch.compile they compute as the layers they replace"):
        assert st.lean(leaned) is leaned
    lean.warn_compiled_as_replaced.cache_clear()
    rewritten = [e.layer for e in st.lean_report(leaned).rewritten]
    assert rewritten == ["BatchNorm2d", "LIF", "MaxPool2d", "Linear"]
    x = torch.rand(4, 1, 8, 8) * 3.0
    assert torch.equal(leaned(x), plain(x))
    assert saved_bytes(leaned, list(leaned.parameters()), x) < saved_bytes(plain, list(plain.parameters()), x) / 2
    assert graph_calls(leaned, x) == graph_calls(plain, x)
    monkeypatch.setattr(lean, "TORCH_VERSION", lean.LEAN_COMPILED_MIN_TORCH)
    assert graph_calls(leaned, x) != graph_calls(plain, x)  # on 2.13 and newer, the lean forms are traced
