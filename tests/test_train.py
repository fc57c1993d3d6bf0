"""train.py as a user runs it (a subprocess): outputs of a compiled CPU run, resume after Ctrl-C to the
same result as an uninterrupted run (whichever data path), two processes under torchrun equal to one,
and one clear line for bad input."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# A small run: synthetic CIFAR-shaped images, 2 time steps, a few batches per epoch.
SMALL = ["--dataset", "synthetic", "--T", "2", "--batch-size", "16"]


def train(*args, check=True, timeout=600, env=None, launcher=()):
    done = subprocess.run([sys.executable, *launcher, str(ROOT / "train.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=None if env is None else {**os.environ, **env})
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_compiled_cpu_run_writes_metrics_summary_plot_and_checkpoints(tmp_path):
    done = train(*SMALL, "--surrogate", "esser", "--compile", "--device", "cpu", "--epochs", "1", "--max-steps", "2",
                 "--out", str(tmp_path))
    assert "[esser] Epoch 1/1" in done.stdout and "Summary" in done.stdout
    (metrics,) = read_metrics(tmp_path)
    assert metrics["surrogate"] == "esser" and metrics["epoch"] == 1
    assert 0 <= metrics["test_acc"] <= 1 and metrics["train_loss"] > 0 and metrics["images_per_s"] > 0
    assert list(metrics["firing_rates"]) == ["lif1", "lif2", "lif3"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["surrogates"]["esser"]["best_test_acc"] == metrics["test_acc"]
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = torch.load(tmp_path / "best_esser.pt", weights_only=True)
    assert best["epoch"] == 1 and "net.0.weight" in best["model"]
    ckpt = torch.load(tmp_path / "checkpoint_esser.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"]) == (1, 0)


def test_compiled_bf16_run_with_data_on_the_device(tmp_path):
    """The fast GPU options, on a CPU: reduce-overhead compiles as default there, and says so."""
    done = train(*SMALL, "--surrogate", "sigmoid", "--compile-mode", "reduce-overhead", "--precision", "bf16",
                 "--data-on-device", "--device", "cpu", "--epochs", "1", "--max-steps", "2", "--out", str(tmp_path))
    assert "bf16, data on the device, compiled (reduce-overhead)" in done.stdout
    assert "CUDA graphs exist only on CUDA; on cpu it compiles as default" in done.stdout
    (metrics,) = read_metrics(tmp_path)
    assert metrics["train_loss"] > 0 and 0 <= metrics["test_acc"] <= 1
    assert json.loads((tmp_path / "summary.json").read_text())["config"]["precision"] == "bf16"


def test_resume_after_ctrl_c_reaches_the_uninterrupted_result(tmp_path):
    """Also: the same seed on a CPU gives the same metrics and weights in another process."""
    run = [*SMALL, "--surrogate", "all", "--epochs", "2", "--max-steps", "20"]
    train(*run, "--out", str(tmp_path / "straight"))

    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *run, "--out", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:  # Ctrl-C during the first surrogate's second epoch
        if "[superspike] Epoch 1/2" in line:
            proc.send_signal(signal.SIGINT)
            break
    assert proc.wait(timeout=300) == 130, proc.stderr.read()
    assert "--resume" in proc.stderr.read()
    stopped = torch.load(out / "checkpoint_superspike.pt", weights_only=True)
    assert stopped["epoch"] == 1, "interrupted in the second epoch, not after it"

    train(*run, "--out", str(out), "--resume", "--data-on-device")  # the same batches, made another way
    timing = ("epoch_time", "images_per_s")
    straight, resumed = read_metrics(tmp_path / "straight"), read_metrics(out)
    assert [{k: v for k, v in m.items() if k not in timing} for m in resumed] == \
           [{k: v for k, v in m.items() if k not in timing} for m in straight]
    assert len(resumed) == 6
    for surrogate in ("superspike", "sigmoid", "esser"):
        a, b = (torch.load(d / f"checkpoint_{surrogate}.pt", weights_only=True) for d in (tmp_path / "straight", out))
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"] == 40
        assert all(torch.equal(a["optimizer"]["state"][i]["exp_avg_sq"], b["optimizer"]["state"][i]["exp_avg_sq"])
                   for i in a["optimizer"]["state"])


def test_two_processes_under_torchrun_equal_one(tmp_path):
    """torchrun --nproc_per_node=2 on the CPU (gloo), each process with half of every batch made on
    the device, against one process with the DataLoader: the same global batches, so the same
    weights, Adam state and metrics but for float rounding (DDP sums the gradients in another
    order; after many steps Adam would amplify that into different spikes, so only a few)."""
    run = ["--dataset", "synthetic", "--T", "4", "--batch-size", "16", "--surrogate", "sigmoid", "--lr", "0.01",
           "--device", "cpu", "--epochs", "1", "--max-steps", "3"]  # every LIF layer fires in these 3 steps
    one, two = tmp_path / "one", tmp_path / "two"
    train(*run, "--out", str(one))
    done = train(*run, "--data-on-device", "--out", str(two), env={"OMP_NUM_THREADS": "1"}, timeout=300,
                 launcher=["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"])
    assert "batch 16 (8 in each of 2 processes)" in done.stdout and done.stdout.count("Epoch 1/1") == 1

    (a,), (b,) = read_metrics(one), read_metrics(two)
    assert min(b["firing_rates"].values()) > 0
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert b[key] == pytest.approx(a[key], rel=1e-5), key
    assert b["firing_rates"] == pytest.approx(a["firing_rates"], rel=1e-5)
    ckpt_a, ckpt_b = (torch.load(d / "checkpoint_sigmoid.pt", weights_only=True) for d in (one, two))
    for k in ckpt_a["model"]:
        torch.testing.assert_close(ckpt_b["model"][k], ckpt_a["model"][k], rtol=0, atol=2e-5)  # lr 0.01 per step
    for i, state in ckpt_a["optimizer"]["state"].items():
        assert ckpt_b["optimizer"]["state"][i]["step"] == state["step"] == 3
        torch.testing.assert_close(ckpt_b["optimizer"]["state"][i]["exp_avg"], state["exp_avg"], rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("args,message", [
    (["--surrogate", "relu"], "invalid choice: 'relu'"),
    (["--epochs", "0"], "must be > 0"),
    (["--dataset", "cifar10", "--data-dir", "{tmp}", "--no-download"], "--data-dir"),
    (["--precision", "fp16"], "invalid choice: 'fp16'"),
    (["--compile-mode", "fast"], "invalid choice: 'fast'"),
    (["--batch-size", "15", "WORLD_SIZE=2"], "must be divisible by the 2 processes"),
])
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    env = dict(a.split("=") for a in args if "=" in a)
    args = [a.format(tmp=tmp_path) for a in args if "=" not in a]
    done = train(*args, "--out", str(tmp_path / "out"), check=False, timeout=120, env=env)
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
    done = train(*SMALL[:-1], "32", "--surrogate", "esser", "--epochs", "2", "--max-steps", "1", "--out",
                 str(tmp_path), "--resume", check=False)
    assert done.returncode != 0 and "batch_size=16" in done.stderr and "Traceback" not in done.stderr
    assert os.path.exists(tmp_path / "checkpoint_esser.pt")


MALLINFO_PROBE = """
import ctypes, torch
from snn_triton import engine

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

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
