"""snn_triton.engine in this process, on tiny synthetic data (1x8x8 images): the compiled step
against eager over several optimizer steps, resuming with another compile mode or precision,
the best-model file, and checkpoints that cannot be resumed."""

import re

import pytest
import torch
from helpers import StopAfter, corrupt

from snn_triton import data as datalib
from snn_triton import engine

STEPS = 6
BF16_ROUNDING = 2.0**-8  # bf16's relative precision: 8 significant bits (measured: 0.003 after 6 steps)
BF16_SAME_STEP = 1e-4  # compiled vs eager bf16 gradient, one step from the same weights, relative


@pytest.fixture(scope="module")
def tiny():
    """Synthetic 1x8x8 images, STEPS batches of 16, scaled by 3 so that every LIF layer fires."""
    data = datalib.synthetic(1, 8, 10, sizes=(16 * STEPS, 32), seed=0)
    for split in (data.train, data.test):
        split.images.mul_(3)
    return data, datalib.splits(data, torch.device("cpu"), resident=True)


def trainer(tiny, tmp_path, **config) -> engine.Trainer:
    """A trainer of the sigmoid surrogate with lr 0.01 (Adam moves the weights visibly in a few
    steps), T=4, batch 16 and STEPS batches per epoch, whose step records each batch's loss."""
    data, splits = tiny
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = engine.Config(
        **{"dataset": "synthetic", "batch_size": 16, "T": 4, "lr": 0.01, "out_dir": str(tmp_path), **config}
    )
    t = engine.Trainer(cfg, "sigmoid", data, splits)
    t.losses, step = [], t.step

    def recorded(*batch):
        loss, sums = step(*batch)
        t.losses.append(loss.detach().clone())
        return loss, sums

    t.step = recorded
    t.grads, optimizer_step = [], t.optimizer.step

    def recorded_step(*args, **kwargs):  # every weight's gradient at this step, in one vector
        t.grads.append(torch.cat([p.grad.flatten() for p in t.model.parameters()]))
        return optimizer_step(*args, **kwargs)

    t.optimizer.step = recorded_step
    return t


def weights(t: engine.Trainer) -> dict:
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}


def resumed(tiny, tmp_path, after: int, **changes) -> engine.Trainer:
    """Trains `after` batches eagerly in fp32, saves a checkpoint inside the epoch, and returns a
    trainer with `changes` that has resumed it and finished the epoch."""
    first = trainer(tiny, tmp_path)
    assert not first.train_epoch(StopAfter(after))
    ckpt = engine.load_checkpoint(first.save())
    assert (ckpt["epoch"], ckpt["batch"]) == (0, after)
    second = trainer(tiny, tmp_path, **changes)
    second.resume(ckpt)
    assert second.train_epoch()
    second.losses = first.losses + second.losses
    return second


def moved_apart(a: dict, b: dict, start: dict) -> float:
    """|a - b| over |b - start|, all weights together: how far two trainings ended apart, as a
    fraction of how far the reference moved."""
    diff = sum(((a[k] - b[k]).double() ** 2).sum() for k in a) ** 0.5
    moved = sum(((b[k] - start[k]).double() ** 2).sum() for k in a) ** 0.5
    return float(diff / moved)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_training_matches_eager(tiny, tmp_path, precision):
    """STEPS Adam steps of the compiled step (torch.compile, inductor's C++ on a CPU) against the
    eager step, in fp32 and under bf16 autocast; in fp32 also resumed compiled from an eager
    checkpoint taken after 2 steps (a resume may change the compile mode). Stated tolerances:
    fp32: every step's loss within 1e-5 relative, every weight within 1e-5 (1/1000 of an Adam
    step at lr 0.01). bf16: the first step's gradient (the same weights and batch) within
    BF16_SAME_STEP of eager bf16's, relative, and at least 10x that from fp32's (eager fp32, which
    the fp32 case holds to compiled fp32: a compiled step that dropped autocast fails);
    later losses within 2^-8 relative (one bf16 rounding), and the weights no further from eager
    bf16's than eager bf16's are from eager fp32's (bf16 rounds at other places in the fused code,
    spikes amplify that, and Adam's first steps, of size lr whatever the gradient, turn a rounding
    of a near-zero gradient into a step; measured: 0.16 against 0.35 of how far training moved)."""
    eager = trainer(tiny, tmp_path / "eager", precision=precision)
    start = weights(eager)
    assert eager.train_epoch()
    assert min(eager.totals.sums[3:]) > 0, "every LIF layer fires, so every weight trains"
    compiled = trainer(tiny, tmp_path / "compiled", precision=precision, compile="default")
    assert compiled.train_epoch()
    assert len(compiled.losses) == len(eager.losses) == STEPS
    if precision == "fp32":
        resumed_pair = (
            resumed(tiny, tmp_path / "resumed", 2, compile="default"),
            resumed(tiny, tmp_path / "resumed-eager", 2),
        )
        for t, reference in [(compiled, eager), resumed_pair]:
            torch.testing.assert_close(torch.stack(t.losses), torch.stack(reference.losses), rtol=1e-5, atol=0)
            for k, w in weights(reference).items():
                torch.testing.assert_close(weights(t)[k], w, rtol=0, atol=1e-5)
    else:
        fp32 = trainer(tiny, tmp_path / "fp32")
        assert fp32.train_epoch()
        apart = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
        # the first step's gradient, from the same weights and batch (measured: 0 and 1.8e-3)
        assert apart(compiled.grads[0], eager.grads[0]) <= BF16_SAME_STEP
        assert apart(compiled.grads[0], fp32.grads[0]) >= 10 * BF16_SAME_STEP, "compiled bf16 computes in fp32"
        torch.testing.assert_close(torch.stack(compiled.losses), torch.stack(eager.losses), rtol=BF16_ROUNDING, atol=0)
        assert moved_apart(weights(compiled), weights(eager), start) < moved_apart(weights(eager), weights(fp32), start)


def test_a_resume_may_change_the_precision(tiny, tmp_path):
    """An fp32 checkpoint taken inside the epoch, resumed under bf16 autocast: the resume is
    accepted, continues from the checkpoint's batch (Adam's step count) and trains in bf16 (its
    losses are no longer fp32's, but within one bf16 rounding of them)."""
    straight = trainer(tiny, tmp_path / "fp32")
    assert straight.train_epoch()
    switched = resumed(tiny, tmp_path / "bf16", 2, precision="bf16")
    assert switched.cfg.precision == "bf16" and switched.batch == STEPS
    assert switched.optimizer.state_dict()["state"][0]["step"] == STEPS
    torch.testing.assert_close(torch.stack(switched.losses[:2]), torch.stack(straight.losses[:2]), rtol=0, atol=0)
    assert not torch.equal(torch.stack(switched.losses[2:]), torch.stack(straight.losses[2:]))
    torch.testing.assert_close(torch.stack(switched.losses), torch.stack(straight.losses), rtol=BF16_ROUNDING, atol=0)


def scripted_accuracy(t: engine.Trainer, accuracies: list[float]) -> None:
    """Makes t's evaluations report these test accuracies, epoch after epoch."""
    left = iter(accuracies)

    def evaluate():
        images = 32.0
        return [images, next(left) * images, images] + [0.0] * len(t.layers)

    t.evaluate = evaluate


def test_best_model_file_keeps_the_best_epoch_across_a_resume(tiny, tmp_path):
    """Test accuracy 50%, 80%, 60% (best: epoch 2, not the last), then a resume that goes on with
    70% (still epoch 2) and 90% (now epoch 4): best_<run>.pt holds the weights that each best
    epoch ended with, and its epoch and accuracy."""
    ended = {}

    def record(t):
        return lambda metrics: ended.__setitem__(metrics["epoch"], weights(t))

    def best():
        return torch.load(engine.best_path(first.cfg, "sigmoid"), weights_only=True)

    first = trainer(tiny, tmp_path, epochs=3, max_steps=1)
    scripted_accuracy(first, [0.5, 0.8, 0.6])
    first.run(record(first))
    assert (best()["epoch"], best()["test_acc"]) == (2, 0.8)
    assert all(torch.equal(best()["model"][k], ended[2][k]) for k in ended[2])
    assert not torch.equal(ended[2]["net.7.weight"], ended[3]["net.7.weight"])

    second = trainer(tiny, tmp_path, epochs=5, max_steps=1)
    second.resume(engine.load_checkpoint(engine.checkpoint_path(second.cfg, "sigmoid")))
    scripted_accuracy(second, [0.7, 0.9])
    checked = []

    def after(metrics):
        record(second)(metrics)
        expected = 2 if metrics["epoch"] == 4 else 5
        assert best()["epoch"] == second.best["epoch"] == expected
        assert all(torch.equal(best()["model"][k], ended[expected][k]) for k in ended[expected])
        checked.append(metrics["epoch"])

    second.run(after)
    assert checked == [4, 5]


# Every setting a resumed run must keep (a changed one trains another problem), with another value.
CHANGED_SETTINGS = [
    ("dataset", "cifar10"),
    ("batch_size", 8),
    ("lr", 0.02),
    ("T", 2),
    ("beta", 2.0),
    ("seed", 1),
    ("max_steps", 3),
    ("surrogate", "esser"),
]


@pytest.mark.parametrize("setting, value", CHANGED_SETTINGS, ids=[k for k, _ in CHANGED_SETTINGS])
def test_resume_refuses_a_checkpoint_of_another_problem(tiny, tmp_path, setting, value):
    """A ValueError that names the setting and the checkpoint's value, the checkpoint left as it was;
    the settings that may change (epochs, compile, precision, ...) are the other tests' resumes."""
    data, splits = tiny
    t = trainer(tiny, tmp_path, max_steps=2)
    assert not t.train_epoch(StopAfter(1))
    path = t.save()
    ckpt = engine.load_checkpoint(path)
    kept = {"surrogate": "sigmoid", **ckpt["config"]}[setting]
    assert kept != value
    changes = {} if setting == "surrogate" else {setting: value}
    cfg = engine.Config(**{**ckpt["config"], **changes})
    other = engine.Trainer(cfg, value if setting == "surrogate" else "sigmoid", data, splits)
    with pytest.raises(ValueError, match=rf"cannot resume .* trained with {setting}={kept!r}$"):
        other.resume(ckpt)
    assert other.batch == 0 and engine.load_checkpoint(path)["batch"] == 1


@pytest.mark.parametrize(
    "how,what",
    [
        ("text", "truncated or corrupt"),
        ("truncated", "truncated or corrupt"),
        ("empty", "truncated or corrupt"),
        ("not a dict", "not a checkpoint"),
        ("optimizer", "without optimizer"),
        ("config.lr", "without config.lr"),
    ],
)
def test_a_damaged_checkpoint_is_one_clear_error(tiny, tmp_path, how, what):
    t = trainer(tiny, tmp_path, max_steps=1)
    path = t.save()
    corrupt(path, how)
    with pytest.raises(engine.CheckpointError) as error:
        engine.load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message and what in message and "delete it" in message and "--out" in message
    assert "\n" not in message


# Checkpoints with every key but a value no run writes, as an edit or another program leaves them.
WRONG_VALUES = {
    "epoch": ("epoch", "x", "epoch='x'"),
    "batch": ("batch", -1, "batch=-1"),
    "a bool epoch": ("epoch", True, "epoch=True"),
    "seconds": ("totals.seconds", float("inf"), "totals.seconds=inf"),
    "sums": ("totals.sums", torch.zeros(3, dtype=torch.float32), "totals.sums=a torch.float32 tensor of shape [3]"),
    "history": ("history", {"epoch": 1}, "history={'epoch': 1}"),
    "best": ("best", {"test_acc": 0.5}, "best={'test_acc': 0.5}"),
    "model": ("model", {"net.0.weight": [1.0]}, "model={'net.0.weight': [1.0]}"),
}


@pytest.mark.parametrize("case", WRONG_VALUES)
def test_a_checkpoint_with_wrong_values_is_one_clear_error(tiny, tmp_path, case):
    key, value, said = WRONG_VALUES[case]
    t = trainer(tiny, tmp_path, max_steps=1)
    path = t.save()
    ckpt = torch.load(path, weights_only=True)
    head, _, tail = key.partition(".")
    (ckpt[head] if tail else ckpt)[tail or head] = value
    torch.save(ckpt, path)
    with pytest.raises(engine.CheckpointError) as error:
        engine.load_checkpoint(path)
    message = str(error.value)
    assert f"values no run writes ({said})" in message and str(path) in message and "delete it" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    "edit,said",
    [
        (
            lambda c: c["model"].update({"net.0.weight": c["model"]["net.0.weight"].half()}),
            "net.0.weight is torch.float16",
        ),
        (lambda c: c["totals"].update(sums=c["totals"]["sums"][:1]), "totals.sums has shape [1]"),
        (lambda c: c["totals"].update(grad_norms=c["totals"]["grad_norms"][:1]), "totals.grad_norms has shape [1]"),
    ],
    ids=["float16 weight", "sums", "grad_norms"],
)
def test_a_checkpoint_that_would_be_cast_or_broadcast_is_refused(tiny, tmp_path, edit, said):
    """load_state_dict casts a float16 weight and copy_ broadcasts a [1] total without a word: refused."""
    t = trainer(tiny, tmp_path, max_steps=1)
    ckpt = engine.load_checkpoint(t.save())
    edit(ckpt)
    other = trainer(tiny, tmp_path, max_steps=1)
    before = weights(other)
    with pytest.raises(engine.CheckpointError, match=rf"do not fit this network \({re.escape(said)}.*delete it"):
        other.resume(ckpt)
    assert all(torch.equal(before[k], v) for k, v in weights(other).items()), "nothing is loaded"


def test_a_checkpoint_of_another_network_is_one_clear_error(tiny, tmp_path):
    """Tensors of the wrong shape (a checkpoint edited or taken from another network)."""
    t = trainer(tiny, tmp_path, max_steps=1)
    ckpt = engine.load_checkpoint(t.save())
    ckpt["model"]["net.7.weight"] = torch.zeros(3, 3)
    with pytest.raises(engine.CheckpointError, match="do not fit this network.*delete it"):
        trainer(tiny, tmp_path, max_steps=1).resume(ckpt)


def test_grad_norms_are_the_mean_over_the_steps_of_each_weights_gradient_norm(tiny, tmp_path):
    """metrics["grad_norms"] against the norms read, in float64, from every weight's .grad just
    before each optimizer step, over an epoch stopped after 2 steps and resumed by another trainer
    (the first steps' sums travel in the checkpoint)."""
    seen = []

    def recorded(t):
        step = t.optimizer.step

        def recording_step(*args, **kwargs):
            seen.append(
                [
                    torch.linalg.vector_norm(m.weight.grad.double()).item()
                    for m in (t.model.net[0], t.model.net[3], t.model.net[7], t.model.net[9])
                ]
            )
            return step(*args, **kwargs)

        t.optimizer.step = recording_step
        return t

    first = recorded(trainer(tiny, tmp_path))
    assert not first.train_epoch(StopAfter(2))
    second = recorded(trainer(tiny, tmp_path))
    second.resume(engine.load_checkpoint(first.save()))
    assert second.train_epoch()
    metrics = second.finish_epoch()
    assert len(seen) == STEPS and list(metrics["grad_norms"]) == ["conv1", "conv2", "fc1", "fc2"]
    expected = [sum(step[i] for step in seen) / STEPS for i in range(4)]
    assert list(metrics["grad_norms"].values()) == pytest.approx(expected, rel=1e-6)
    assert min(expected) > 0


def test_the_temporary_files_a_killed_write_leaves_are_removed_on_the_next_start(tiny, tmp_path):
    """A kill between writing and renaming leaves .checkpoint_<run>.pt.tmp (or .best_...): the next
    trainer of that run deletes them before anything else, and the checkpoint itself still loads."""
    t = trainer(tiny, tmp_path, max_steps=1)
    path = t.save()
    other_run = tmp_path / ".checkpoint_esser_beta1_seed0.pt.tmp"  # another process's run: not ours to delete
    for leftover in (engine.temporary(path), engine.temporary(engine.best_path(t.cfg, "sigmoid")), other_run):
        leftover.write_bytes(b"half a checkpoint")
    again = trainer(tiny, tmp_path, max_steps=1)
    assert [p.name for p in tmp_path.glob(".*.tmp")] == [other_run.name]
    again.resume(engine.load_checkpoint(path))
