"""st.export_streaming: the single-step network with explicit state, run step by step as PyTorch,
as torch.export's program and in ONNX Runtime, equals the multi-step model: the same spikes at
every layer and step, logits within rounding; the state starts at rest and resets when passed again."""

import pytest
import torch
from torch import nn

import snn_triton as st
from snn_triton.streaming import NeuronStep

ort = pytest.importorskip("onnxruntime", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
pytest.importorskip("onnxscript", reason="the deploy extra (pip install -e '.[deploy]') is not installed")

T, N = 4, 2


def outputs_of(model, kinds, run):
    """Run `run()` and return the outputs of `model`'s submodules of `kinds`, in call order."""
    seen = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
        for m in model.modules()
        if isinstance(m, kinds)
    ]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return result, seen


def ort_steps(streaming, xs):
    """The ONNX model over the steps xs: outputs [T, ...] and the state after each step."""
    session = ort.InferenceSession(str(streaming.onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["x", *streaming.state_names]
    state, ys, states = [v.numpy() for v in streaming.initial_state], [], []
    for x in xs:
        y, *state = session.run(None, {"x": x.numpy(), **dict(zip(streaming.state_names, state))})
        ys.append(torch.from_numpy(y))
        states.append([torch.from_numpy(v) for v in state])
    return torch.stack(ys), states


def test_basic_csnn_step_by_step(tmp_path):
    torch.manual_seed(0)
    net = st.BasicCSNN(T=T, image_size=8).eval()
    x = torch.rand(N, 3, 8, 8) * 4
    with torch.no_grad():
        for layer in (net.net[3], net.net[7]):  # so that every layer spikes often
            layer.weight.mul_(4)
        logits, layer_spikes = outputs_of(net, st.LIF, lambda: net(x))  # 3 x [T, N, ...]
        fc2 = net.net[9]
        for s in layer_spikes:
            assert 0.02 < s.mean() < 0.98, "the check needs spikes and silence at every layer"
        streaming = st.export_streaming(net, x, tmp_path / "net.onnx")
        assert [tuple(v.shape) for v in streaming.initial_state] == [(N, 32, 8, 8), (N, 64, 4, 4), (N, 128)]
        assert all(torch.equal(v, torch.zeros_like(v)) for v in streaming.initial_state)  # rest: v_reset = 0

        program = streaming.program.module()
        for step in (streaming.module, program):
            state, ys = streaming.initial_state, []
            for t in range(T):
                (y, *state), spikes = outputs_of(streaming.module, NeuronStep, lambda: step(x, *state))
                if step is streaming.module:
                    for s_seq, s in zip(layer_spikes, spikes):
                        torch.testing.assert_close(s, s_seq[t], rtol=0, atol=0)
                torch.testing.assert_close(y, fc2(layer_spikes[2][t]), rtol=0, atol=0)
                ys.append(y)
            torch.testing.assert_close(torch.stack(ys).mean(0), logits, rtol=1e-6, atol=1e-6)

        ys, _ = ort_steps(streaming, [x] * T)
        # spikes differing anywhere would move y by a weight of fc2 (~0.1), far beyond the rounding
        torch.testing.assert_close(ys, fc2(layer_spikes[2]), rtol=0, atol=1e-5)
        torch.testing.assert_close(ys.mean(0), logits, rtol=0, atol=1e-5)
        assert net.net[1].steps == T and isinstance(net.net[3], st.SpikeConv2d)  # the model itself unchanged


def test_state_resets_by_passing_the_rest_state_again(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Linear(5, 6),
        st.LIF(v_reset=-0.2, step_mode="s", stateful=True),
        nn.Linear(6, 3),
        st.PLIF(init_tau=3.0, v_reset=None, decay_input=False, step_mode="s", stateful=True),
    )
    with torch.no_grad():
        net[0].weight.mul_(4)
        net[2].weight.mul_(4)
    xs = torch.rand(20, N, 5) * 3
    with torch.no_grad():
        ref = torch.stack([net(x) for x in xs])
    assert 0.05 < ref.mean() < 0.95
    streaming = st.export_streaming(net, xs[0], tmp_path / "net.onnx")
    v0, v1 = streaming.initial_state
    assert torch.equal(v0, torch.full((N, 6), -0.2)) and torch.equal(v1, torch.zeros(N, 3))  # soft reset: rest 0
    for _ in range(2):  # the second pass starts again from initial_state: the same spikes
        ys, states = ort_steps(streaming, xs)
        torch.testing.assert_close(ys, ref, rtol=0, atol=0)
    assert not torch.equal(states[-1][0], v0)


def test_converted_spikingjelly_model(tmp_path):
    from spikingjelly.activation_based import functional, layer, neuron

    torch.manual_seed(2)
    sj = nn.Sequential(
        layer.SeqToANNContainer(nn.Conv2d(2, 4, 3, padding=1)),
        neuron.LIFNode(tau=2.5, decay_input=False, step_mode="m"),
        layer.MaxPool2d(2, step_mode="m"),
        layer.Flatten(step_mode="m"),
        layer.Linear(64, 5, step_mode="m"),
        neuron.IFNode(step_mode="m"),
    )
    with torch.no_grad():
        sj[0][0].weight.mul_(3)
        sj[4].weight.mul_(3)
        sj[4].bias.add_(2.0)
    sj.eval()
    xs = torch.rand(T + 2, N, 2, 8, 8) * 3
    with torch.no_grad():
        ref = sj(xs)
        functional.reset_net(sj)
        st.from_spikingjelly(sj)
        torch.testing.assert_close(sj(xs), ref, rtol=0, atol=0)
        functional.reset_net(sj)
    assert 0.05 < ref.mean() < 0.95
    streaming = st.export_streaming(sj, xs[0], tmp_path / "sj.onnx")
    ys, _ = ort_steps(streaming, xs)
    torch.testing.assert_close(ys, ref, rtol=0, atol=0)
    state, out = streaming.initial_state, []
    for x in xs:
        y, *state = streaming.program.module()(x, *state)
        out.append(y)
    torch.testing.assert_close(torch.stack(out), ref, rtol=0, atol=0)
    assert sj[2].step_mode == "m"  # the model itself is left in multi-step mode


def test_no_path_no_onnx_file_and_bad_input(tmp_path):
    net = nn.Sequential(nn.Linear(3, 3), st.IF(step_mode="s"))
    assert st.export_streaming(net, torch.rand(1, 3)).onnx_path is None
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        st.export_streaming(lambda x: x, torch.rand(1, 3))
    with pytest.raises(TypeError, match="example_step must be a floating-point tensor"):
        st.export_streaming(net, torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="has no neuron layer"):
        st.export_streaming(nn.Linear(3, 3), torch.rand(1, 3))
    with pytest.raises(ValueError, match=r"does not run one step of example_step \(1, 4\)"):
        st.export_streaming(net, torch.rand(1, 4))
