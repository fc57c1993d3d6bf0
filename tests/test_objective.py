"""The step's math (snn_triton.objective.Objective) against the seed's plain loss: a padded batch
trains as the batch it pads, shards scaled by the number of processes average (as DDP does) to the
whole batch's gradient, the metric sums count what they say, and bf16 autocasts the network only."""

import pytest
import torch
import torch.nn.functional as F

import snn_triton as st
from snn_triton.objective import Objective

SHAPE = dict(T=3, in_channels=1, num_classes=5, image_size=8)


def model_and_batch(n=6, seed=0):
    """A small BasicCSNN with weights scaled up so that every LIF layer fires, and a batch."""
    torch.manual_seed(seed)
    model = st.BasicCSNN(**SHAPE, surrogate="sigmoid")
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    g = torch.Generator().manual_seed(seed + 1)
    x = 2.0 * torch.randn(n, 1, 8, 8, generator=g)
    return model, x, torch.randint(0, 5, (n,), generator=g)


def grads(model, loss):
    return torch.autograd.grad(loss, list(model.parameters()))


def spikes_per_layer(model, x):
    """Each LIF layer's spikes [T, N, ...] on x, recorded by hooks of the test's own."""
    out, handles = (
        [],
        [
            m.register_forward_hook(lambda m, i, s: out.append(s.detach()))
            for m in model.modules()
            if isinstance(m, st.LIF)
        ],
    )
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return out


def test_a_padded_batch_trains_and_counts_as_the_batch_it_pads():
    model, x, y = model_and_batch(n=5)
    pad = 3
    x_pad, y_pad = torch.cat([x, x[:pad]]), torch.cat([y, y[:pad]])
    weight = torch.tensor([1 / 5] * 5 + [0.0] * pad)
    loss, sums = Objective(model)(x_pad, y_pad, weight)

    logits = model(x)
    expected = F.cross_entropy(logits, y)  # the seed's loss on the real images alone
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7)
    for g, e in zip(grads(model, loss), grads(model, expected)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)

    rates = [s.mean((0, *range(2, s.dim()))).sum() for s in spikes_per_layer(model, x)]
    assert all(r > 0 for r in rates), "every layer fires"
    correct = (logits.argmax(1) == y).sum()
    torch.testing.assert_close(
        sums, torch.stack([5 * expected.detach(), correct.float(), torch.tensor(5.0), *rates]), rtol=1e-5, atol=1e-6
    )


def test_shards_scaled_by_the_process_count_average_to_the_whole_batch_gradient():
    """What DDP computes: the mean over processes of each one's gradient, with loss_scale = world."""
    model, x, y = model_and_batch(n=8)
    weight = torch.full((8,), 1 / 8)
    whole = grads(model, Objective(model)(x, y, weight)[0])
    shards = [
        grads(model, Objective(model, loss_scale=2)(x[s], y[s], weight[s])[0]) for s in (slice(0, 4), slice(4, 8))
    ]
    for g, a, b in zip(whole, *shards):
        torch.testing.assert_close((a + b) / 2, g, rtol=1e-5, atol=1e-7)


def test_bf16_autocasts_the_network_and_keeps_the_loss_and_weights_float32():
    model, x, y = model_and_batch()
    dtypes = []
    model.net[0].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    weight = torch.full((6,), 1 / 6)
    loss, sums = Objective(model, "bf16")(x, y, weight)
    assert dtypes == [torch.bfloat16] and loss.dtype == sums.dtype == torch.float32
    assert all(g.dtype == torch.float32 and g.isfinite().all() for g in grads(model, loss))
    fp32_loss = Objective(model)(x, y, weight)[0]
    torch.testing.assert_close(loss, fp32_loss, rtol=0.1, atol=0.0)


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        Objective(st.BasicCSNN(**SHAPE), "fp16")


def test_the_step_traces_as_one_graph_with_nothing_read_by_the_host():
    """A read of a device value (.item(), a bool of a tensor) inside the step would break the graph
    here; in a training loop it would make the host wait for the device at every batch."""
    model, x, y = model_and_batch()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(Objective(model, "bf16"))(x, y, torch.full((6,), 1 / 6))
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons
