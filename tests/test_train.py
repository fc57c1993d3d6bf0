"""train.py as a user runs it (a subprocess): outputs of a compiled CPU run, resume after Ctrl-C to the
same result as an uninterrupted run (whichever data path), two processes under torchrun equal to one,
and one clear line for bad input."""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import StopAfter, corrupt

import snn_triton as st

ROOT = Path(__file__).resolve().parents[1]
# A small run: synthetic CIFAR-shaped images, 2 time steps, a few batches per epoch.
SMALL = ["--dataset", "synthetic", "--T", "2", "--batch-size", "16"]


def train(*args, check=True, timeout=600, env=None, launcher=()):
    done = subprocess.run(
        [sys.executable, *launcher, str(ROOT / "train.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in ("epoch_time", "images_per_s")} for m in metrics]


def checkpoint(out: Path, run: str, kind: str = "checkpoint") -> dict:
    """A run's checkpoint (or best-model file), as a user would load it."""
    return torch.load(out / f"{kind}_{run}.pt", weights_only=True)


def assert_same_weights_and_adam(a: dict, b: dict) -> None:
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    for i, state in a["optimizer"]["state"].items():
        assert state["step"] == b["optimizer"]["state"][i]["step"]
        assert torch.equal(state["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
        assert torch.equal(state["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])


def test_compiled_cpu_run_writes_metrics_summary_plot_and_checkpoints(tmp_path):
    """With the fast GPU options, on a CPU (one compile for the whole test): reduce-overhead compiles
    as default there, and says so; bf16 and the data on the device."""
    fast = ["--compile-mode", "reduce-overhead", "--precision", "bf16", "--data-on-device"]
    done = train(
        *SMALL,
        "--surrogate",
        "esser",
        *fast,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--out",
        str(tmp_path),
    )
    assert "bf16, data on the device, compiled (reduce-overhead)" in done.stdout
    assert "CUDA graphs exist only on CUDA; on cpu it compiles as default" in done.stdout
    assert "[esser_beta1_seed0] Epoch 1/1" in done.stdout and "Summary" in done.stdout
    assert "No CUDA runtime is found" not in done.stderr, "a CUDA note on a CPU run"
    (metrics,) = read_metrics(tmp_path)
    assert (metrics["surrogate"], metrics["beta"], metrics["seed"], metrics["epoch"]) == ("esser", 1.0, 0, 1)
    assert 0 <= metrics["test_acc"] <= 1 and metrics["train_loss"] > 0 and metrics["images_per_s"] > 0
    assert list(metrics["firing_rates"]) == ["lif1", "lif2", "lif3"]
    assert list(metrics["grad_norms"]) == ["conv1", "conv2", "fc1", "fc2"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config"]["precision"] == "bf16"
    assert summary["runs"]["esser_beta1_seed0"]["best_test_acc"] == metrics["test_acc"]
    for png in ("accuracy.png", "study.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = checkpoint(tmp_path, "esser_beta1_seed0", "best")
    assert best["epoch"] == 1 and "net.0.weight" in best["model"]
    ckpt = checkpoint(tmp_path, "esser_beta1_seed0")
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)

    # Resuming a run that had finished trains nothing and writes the same results.
    again = train(
        *SMALL,
        "--surrogate",
        "esser",
        *fast,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--out",
        str(tmp_path),
        "--resume",
    )
    assert "Epoch" not in again.stdout and "Summary" in again.stdout
    assert read_metrics(tmp_path) == [metrics]
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert_same_weights_and_adam(checkpoint(tmp_path, "esser_beta1_seed0"), ckpt)


# Runs train.py, printing "training step N" after the forward of its N-th training step.
MARK_STEPS = """
import runpy, sys
import torch
from snn_triton import objective

sys.argv = sys.argv[1:]  # train.py and its arguments
forward, count = objective.Objective.forward, 0

def marked_forward(self, *args):
    global count
    out = forward(self, *args)
    if torch.is_grad_enabled():
        count += 1
        print(f"training step {count}", flush=True)
    return out
objective.Objective.forward = marked_forward

runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_resume_after_ctrl_c_reaches_the_uninterrupted_result(tmp_path):
    """A real SIGINT during the second batch of the first surrogate's second epoch: a checkpoint
    inside that epoch, exit 130; --resume (with the data made another way) ends as the run never
    interrupted. Also: the same seed on a CPU gives the same metrics and weights in another process."""
    steps = 8
    run = [*SMALL, "--surrogate", "all", "--epochs", "2", "--max-steps", str(steps)]
    train(*run, "--out", str(tmp_path / "straight"))

    out = tmp_path / "interrupted"
    proc = subprocess.Popen(
        [sys.executable, "-c", MARK_STEPS, str(ROOT / "train.py"), *run, "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if line.strip() == f"training step {steps + 2}":
            proc.send_signal(signal.SIGINT)
            break
    assert proc.wait(timeout=300) == 130, proc.stderr.read()
    assert "--resume" in proc.stderr.read()
    stopped = checkpoint(out, "superspike_beta10_seed0")
    # the signal lands during the second batch, and the loop stops after the batch it is in
    assert stopped["epoch"] == 1 and 2 <= stopped["batch"] < steps, "stopped inside the second epoch"
    assert not (out / "checkpoint_sigmoid_beta4_seed0.pt").exists()

    train(*run, "--out", str(out), "--resume", "--data-on-device")  # the same batches, made another way
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(out)
    assert without_timing(resumed) == without_timing(straight) and len(resumed) == 6
    for surrogate in ("superspike_beta10", "sigmoid_beta4", "esser_beta1"):
        a, b = (checkpoint(d, f"{surrogate}_seed0") for d in (tmp_path / "straight", out))
        assert a["optimizer"]["state"][0]["step"] == 2 * steps
        assert_same_weights_and_adam(a, b)


def train_module():
    """train.py imported into this process."""
    sys.path.insert(0, str(ROOT))
    try:
        import train as train_py
    finally:
        sys.path.remove(str(ROOT))
    return train_py


def stopped_in_epoch(argv: list[str], batches: int) -> None:
    """The checkpoint train.py `argv` would save on a Ctrl-C after `batches` batches of its first
    epoch, made in this process (a real signal could land a batch later)."""
    from snn_triton import data as datalib
    from snn_triton import engine

    args = train_module().parse_args(argv)
    data = datalib.load(args.dataset, args.data_dir, seed=args.seeds[0])
    cfg = engine.Config(
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        T=args.T,
        beta=st.SURROGATES[args.surrogate],
        seed=args.seeds[0],
        max_steps=args.max_steps,
        out_dir=args.out,
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    trainer = engine.Trainer(cfg, args.surrogate, data, datalib.splits(data, torch.device("cpu"), resident=False))
    assert not trainer.train_epoch(StopAfter(batches))
    trainer.save()


def test_a_one_process_checkpoint_resumes_in_two_processes_under_torchrun(tmp_path):
    """A checkpoint taken inside an epoch by one process, resumed by torchrun --nproc_per_node=2 on
    the CPU (gloo), each process with half of every batch made on the device, against one process
    with the DataLoader from start to end: the same global batches, so the same weights, Adam state
    and metrics but for float rounding (DDP sums the gradients in another order; after many steps
    Adam would amplify that into different spikes, so only a few)."""
    run = [
        "--dataset",
        "synthetic",
        "--T",
        "4",
        "--batch-size",
        "16",
        "--surrogate",
        "sigmoid",
        "--lr",
        "0.01",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "3",
    ]  # every LIF layer fires in these 3 steps
    one, two = tmp_path / "one", tmp_path / "two"
    train(*run, "--out", str(one))
    stopped_in_epoch([*run, "--out", str(two)], batches=1)
    done = train(
        *run,
        "--data-on-device",
        "--out",
        str(two),
        "--resume",
        env={"OMP_NUM_THREADS": "1"},
        timeout=300,
        launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"],
    )
    assert "batch 16 (8 in each of 2 processes)" in done.stdout and done.stdout.count("Epoch 1/1") == 1

    (a,), (b,) = read_metrics(one), read_metrics(two)
    assert min(b["firing_rates"].values()) > 0
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert b["firing_rates"] == pytest.approx(a["firing_rates"], rel=1e-5)
    assert b["grad_norms"] == pytest.approx(a["grad_norms"], rel=1e-5)
    ckpt_a, ckpt_b = (checkpoint(d, "sigmoid_beta4_seed0") for d in (one, two))
    for k in ckpt_a["model"]:
        torch.testing.assert_close(ckpt_b["model"][k], ckpt_a["model"][k], rtol=0, atol=2e-5)  # lr 0.01 per step
    for i, state in ckpt_a["optimizer"]["state"].items():
        assert ckpt_b["optimizer"]["state"][i]["step"] == state["step"] == 3
        torch.testing.assert_close(ckpt_b["optimizer"]["state"][i]["exp_avg"], state["exp_avg"], rtol=1e-3, atol=1e-7)


# Runs train.py, killing it with SIGKILL at the N-th event of one kind: a training step ("train",
# in the forward), a test batch ("eval"), a checkpoint or best-model file half written ("write"),
# or written whole but not yet renamed over the old one ("rename").
KILLER = """
import io, os, runpy, signal, sys
import torch
from snn_triton import objective

event, n = sys.argv[1], int(sys.argv[2])
sys.argv = sys.argv[3:]  # train.py and its arguments
count = 0

def happened(kind):
    global count
    if kind == event:
        count += 1
        if count == n:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

forward = objective.Objective.forward
def counted_forward(self, *args):
    happened("train" if torch.is_grad_enabled() else "eval")
    return forward(self, *args)
objective.Objective.forward = counted_forward

save = torch.save
def half_written_save(obj, f, *args, **kwargs):
    if event == "write" and count + 1 == n and not isinstance(f, (str, os.PathLike)):
        buffer = io.BytesIO()
        save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
    happened("write")
    return save(obj, f, *args, **kwargs)
torch.save = half_written_save

replace = os.replace
def counted_replace(src, dst):
    if os.path.basename(dst).startswith(("checkpoint_", "best_")):
        happened("rename")
    return replace(src, dst)
os.replace = counted_replace

runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_sigkill_at_random_moments_then_resume_reaches_the_uninterrupted_result(tmp_path):
    """kill -9 inside a training epoch, inside the evaluation, in the middle of writing a
    checkpoint and between writing and renaming it, each at a random position (the seed is in the
    failure message), in a study of two seeds; every kill leaves the checkpoints that exist
    loadable, and --resume after the last one, split over two processes (--runs), ends with the
    metrics, study, weights, Adam state and best-model files of a study never interrupted, with no
    temporary file left."""
    run = [*SMALL, "--surrogate", "sigmoid", "--seeds", "0", "1", "--epochs", "2", "--max-steps", "4"]
    train(*run, "--out", str(tmp_path / "straight"))
    out = tmp_path / "killed"
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    # per event, the range of N that the remaining work is sure to reach (4 steps, 4 test batches a
    # epoch; a resumed segment has at least one epoch of a run left, whose end writes >= 1 file)
    for event, most in (("train", 8), ("eval", 4), ("write", 3), ("rename", 3)):
        n = rng.randint(1, most)
        killed = subprocess.run(
            [
                sys.executable,
                "-c",
                KILLER,
                event,
                str(n),
                str(ROOT / "train.py"),
                *run,
                "--out",
                str(out),
                *(["--resume"] if out.exists() else []),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert killed.returncode == -signal.SIGKILL, (seed, event, n, killed.stderr[-3000:])
        for path in out.glob("*.pt"):  # whatever a kill interrupts, the files under their names load
            torch.load(path, weights_only=True)
        if event == "write":
            assert list(out.glob(".*.pt.tmp")), "the half-written file is left, under its temporary name"
    # The rest of the study in two processes, one run each: the second to end writes the whole study.
    train(*run, "--out", str(out), "--resume", "--runs", "0/2")
    done = train(*run, "--out", str(out), "--resume", "--runs", "1/2")
    assert "Not in the study yet" not in done.stdout
    assert not list(out.glob(".*.tmp")), "leftover temporary files are removed"
    assert without_timing(read_metrics(out)) == without_timing(read_metrics(tmp_path / "straight")), seed
    assert (out / "study.json").read_text() == (tmp_path / "straight" / "study.json").read_text()
    for name in ("sigmoid_beta4_seed0", "sigmoid_beta4_seed1"):
        assert_same_weights_and_adam(checkpoint(tmp_path / "straight", name), checkpoint(out, name))
        a, b = checkpoint(tmp_path / "straight", name, "best"), checkpoint(out, name, "best")
        assert a["epoch"] == b["epoch"] and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


@pytest.mark.parametrize("how", ["truncated", "history"])
def test_resuming_a_damaged_checkpoint_says_what_to_do_in_one_line(tmp_path, how):
    run = [*SMALL, "--surrogate", "esser", "--epochs", "1", "--max-steps", "2", "--out", str(tmp_path)]
    stopped_in_epoch(run, batches=1)
    path = tmp_path / "checkpoint_esser_beta1_seed0.pt"
    corrupt(path, how)
    done = train(*run, "--resume", check=False, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(path) in line and ("truncated" if how == "truncated" else "without history") in line
    assert "delete it to start that run over, or point --out elsewhere" in line


def test_a_second_ctrl_c_quits_at_once_and_the_run_still_resumes(tmp_path):
    """The first Ctrl-C asks for a checkpoint after the current batch, the second quits before
    (or while) it is written: exit 130, no traceback, the checkpoints that exist load, and
    --resume finishes the run."""
    run = [*SMALL, "--surrogate", "superspike", "--epochs", "2", "--max-steps", "20", "--out", str(tmp_path)]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *run],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in proc.stdout:
        if "Epoch 1/2" in line:
            break
    proc.send_signal(signal.SIGINT)
    for line in proc.stderr:
        if "Ctrl-C again to quit at once" in line:
            proc.send_signal(signal.SIGINT)
            break
    assert proc.wait(timeout=120) == 130
    stderr = proc.stderr.read()
    assert "Interrupted" in stderr and "Traceback" not in stderr
    for path in tmp_path.glob("*.pt"):
        torch.load(path, weights_only=True)
    train(*run, "--resume")
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1, 2]


def test_beta_scale_sweeps_each_surrogates_own_beta(tmp_path):
    """--beta-scale 0.5 2 trains SuperSpike with beta 5 and 20 (its own is 10): two runs, from the
    same initial weights and batches, that differ only by beta, grouped by it in the study."""
    train(
        *SMALL,
        "--surrogate",
        "superspike",
        "--beta-scale",
        "0.5",
        "2",
        "--epochs",
        "1",
        "--max-steps",
        "1",
        "--out",
        str(tmp_path),
    )
    five, twenty = (checkpoint(tmp_path, f"superspike_beta{b}_seed0") for b in (5, 20))
    assert (five["config"]["beta"], twenty["config"]["beta"]) == (5.0, 20.0)
    assert not torch.equal(five["model"]["net.0.weight"], twenty["model"]["net.0.weight"])
    s = json.loads((tmp_path / "study.json").read_text())
    assert [(name, g["beta"]) for name, g in s["surrogates"].items()] == [
        ("superspike beta=5", 5.0),
        ("superspike beta=20", 20.0),
    ]
    assert [m["beta"] for m in read_metrics(tmp_path)] == [5.0, 20.0]


BAD_INPUT = [
    (["--surrogate", "relu"], "invalid choice: 'relu'"),
    (["--epochs", "0"], "must be > 0"),
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--compile-mode", "fast"], "invalid choice: 'fast'"),
    (["--batch-size", "15", "WORLD_SIZE=2"], "must be divisible by the 2 processes"),
    (["--seed", "1", "--seeds", "0", "1"], "--seed and --seeds: give one"),
    (["--seeds", "0", "1", "0"], "--seeds: each seed once"),
    (["--beta", "2", "--beta-scale", "0.5", "2"], "--beta and --beta-scale: give one"),
    (["--beta-scale", "0"], "must be a finite number > 0, got 0"),
    (["--beta-scale", "2", "2"], "--beta-scale: each factor once"),
    (["--runs", "2/2"], "must be I/N with integers 0 <= I < N"),
    (["--lr", "inf"], "must be a finite number > 0, got inf"),  # trains to NaN
    (["--beta", "inf"], "must be a finite number > 0, got inf"),
    (["--beta-scale", "nan"], "must be a finite number > 0, got nan"),
    (["--seed", str(2**64)], "must be an integer in [0, 2**32)"),  # past what torch.manual_seed takes
    (["--seeds", "0", "-1"], "must be an integer in [0, 2**32)"),
]


@pytest.mark.parametrize("args,message", BAD_INPUT, ids=[m for _, m in BAD_INPUT])
def test_bad_arguments_are_refused_with_one_clear_line(args, message, monkeypatch, capsys):
    """train.py's argument checks, in this process (the subprocess tests below show that such an
    error reaches the shell as one line, without a traceback)."""
    for a in args:
        if "=" in a:
            monkeypatch.setenv(*a.split("="))
    with pytest.raises(SystemExit) as done:
        train_module().parse_args([a for a in args if "=" not in a])
    assert done.value.code == 2
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert message in line


def test_export_onnx_without_its_packages_is_refused_before_training(monkeypatch, capsys):
    """--export-onnx where onnx is not installed stops at the arguments, naming the extra to install,
    not after the first run has trained."""
    module = train_module()
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as done:
        module.parse_args(["--export-onnx"])
    assert done.value.code == 2 and "pip install -e '.[deploy]'" in capsys.readouterr().err


def test_compile_flag_means_compile_mode_default():
    parse = train_module().parse_args
    assert (parse([]).compile_mode, parse(["--compile"]).compile_mode) == (None, "default")
    assert parse(["--compile-mode", "max-autotune"]).compile_mode == "max-autotune"


@pytest.mark.parametrize(
    "args,message",
    [
        (["--surrogate", "relu"], "invalid choice: 'relu'"),  # argparse's own error
        (["--dataset", "cifar10", "--data-dir", "{tmp}", "--no-download"], "--data-dir"),  # train.py's, after parsing
    ],
)
def test_bad_input_reaches_the_shell_as_one_clear_line(tmp_path, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    done = train(*args, "--out", str(tmp_path / "out"), check=False, timeout=120)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr
    if message == "--data-dir":
        assert "--dataset fashion-mnist" in done.stderr and "--dataset synthetic" in done.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
def test_cuda_without_a_gpu_is_refused(tmp_path):
    done = train(*SMALL, "--device", "cuda", "--out", str(tmp_path), check=False, timeout=120)
    assert done.returncode == 2 and "no CUDA GPU" in done.stderr and "Traceback" not in done.stderr


def test_resume_refuses_a_different_problem(tmp_path):
    train(*SMALL, "--surrogate", "esser", "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path))
    done = train(
        *SMALL[:-1],
        "32",
        "--surrogate",
        "esser",
        "--epochs",
        "2",
        "--max-steps",
        "1",
        "--out",
        str(tmp_path),
        "--resume",
        check=False,
    )
    assert done.returncode != 0 and "batch_size=16" in done.stderr and "Traceback" not in done.stderr
    assert os.path.exists(tmp_path / "checkpoint_esser_beta1_seed0.pt")


@pytest.mark.parametrize("change", [("--seed", "1"), ("--surrogate", "sigmoid"), ("--beta", "2")])
def test_resume_refuses_another_run_and_keeps_its_outputs(tmp_path, change):
    """--resume with another seed, surrogate or beta names another checkpoint, which is not there: the
    one there is named in the refusal, and its metrics are left as they were (no new run over them)."""
    train(*SMALL, "--surrogate", "esser", "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path))
    metrics = (tmp_path / "metrics.jsonl").read_text()
    args = {"--surrogate": "esser", "--epochs": "2", "--max-steps": "1", "--out": str(tmp_path), **dict([change])}
    done = train(*SMALL, *[a for kv in args.items() for a in kv], "--resume", check=False)
    assert done.returncode != 0 and "checkpoint_esser_beta1_seed0.pt" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and (tmp_path / "metrics.jsonl").read_text() == metrics


def test_a_run_started_again_over_its_checkpoint_is_refused(tmp_path):
    """The same command again without --resume would overwrite the run's checkpoint and metrics: it
    stops in one line, naming the checkpoint, and leaves them as they were."""
    args = [*SMALL, "--surrogate", "esser", "--epochs", "1", "--max-steps", "1", "--out", str(tmp_path)]
    train(*args)
    kept = [(tmp_path / name).read_bytes() for name in ("metrics.jsonl", "checkpoint_esser_beta1_seed0.pt")]
    done = train(*args, check=False)
    assert done.returncode != 0 and "add --resume" in done.stderr and "Traceback" not in done.stderr
    assert [(tmp_path / name).read_bytes() for name in ("metrics.jsonl", "checkpoint_esser_beta1_seed0.pt")] == kept


MALLINFO_PROBE = """
import ctypes, torch
from snn_triton import engine

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Mallinfo2
size = 64 << 20  # an activation of the seed network's size
buffer = torch.empty(size // 4)
mapped_before = libc.mallinfo2().hblkhd  # bytes in blocks of their own, unmapped when freed
del buffer
kept = engine.keep_freed_memory()
buffer = torch.empty(size // 4)
print(mapped_before >= size, kept, libc.mallinfo2().hblkhd < size, libc.mallinfo2().arena >= size)
"""


@pytest.mark.skipif(os.uname().sysname != "Linux", reason="glibc's allocator")
def test_keep_freed_memory_puts_large_buffers_in_the_heap():
    """What train.py does on a CPU: a 64 MB tensor is no longer a mapping of its own (page-faulted
    in anew after every free) but heap memory that stays with the process for the next step."""
    done = subprocess.run([sys.executable, "-c", MALLINFO_PROBE], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True"] * 4, done.stdout + done.stderr


def test_export_onnx_writes_the_best_model_beside_its_checkpoint(tmp_path):
    """best_<run>.onnx runs in ONNX Runtime, one step per call, to BasicCSNN's logits of best_<run>.pt."""
    ort = pytest.importorskip("onnxruntime", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
    pytest.importorskip("onnxscript", reason="the deploy extra (pip install -e '.[deploy]') is not installed")
    done = train(
        *SMALL,
        "--surrogate",
        "superspike",
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--max-steps",
        "2",
        "--export-onnx",
        "--out",
        str(tmp_path),
    )
    run = "superspike_beta10_seed0"
    assert f"wrote {tmp_path / f'best_{run}.onnx'}" in done.stdout
    net = st.BasicCSNN(T=2)
    net.load_state_dict(checkpoint(tmp_path, run, "best")["model"])
    torch.manual_seed(0)
    image = torch.rand(1, 3, 32, 32)
    session = ort.InferenceSession(str(tmp_path / f"best_{run}.onnx"), providers=["CPUExecutionProvider"])
    state = {i.name: torch.zeros(i.shape).numpy() for i in session.get_inputs()[1:]}  # at rest: v_reset = 0
    outputs = []
    for _ in range(2):
        y, *new = session.run(None, {"x": image.numpy(), **state})
        state = dict(zip(state, new))
        outputs.append(torch.from_numpy(y))
    with torch.no_grad():
        torch.testing.assert_close(torch.stack(outputs).mean(0), net.eval()(image), rtol=0, atol=1e-5)
