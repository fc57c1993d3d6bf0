#!/usr/bin/env python
"""Train BasicCSNN as the seed experiment does (CIFAR-10, T=8, Adam 1e-3, batch 64, 10 epochs) and
compare surrogate gradients.

    python train.py --surrogate all                  # the seed's comparison of the three surrogates
    python train.py --surrogate sigmoid --compile    # one surrogate, the whole net under torch.compile
    python train.py --dataset fashion-mnist          # offline (apt-get install dataset-fashion-mnist)
    python train.py --resume                         # continue an interrupted run (same --out)
    python train.py --seeds 0 1 2 --beta-scale 0.5 1 2   # a study: paired statistics over seeds, a beta sweep
    python train.py --compile-mode reduce-overhead --precision bf16   # a GPU: CUDA graphs, bf16 (data on it by default)
    torchrun --nproc_per_node=4 train.py --batch-size 256 --compile   # 4 GPUs (DDP), 64 images each per step

Every (surrogate, beta, seed) is a run, named like superspike_beta10_seed0. Writes to --out:
metrics.jsonl (a line per epoch and run), summary.json and accuracy.png (per run), study.json,
study.md and study.png (over seeds), best_<run>.pt (best test accuracy) and checkpoint_<run>.pt
(every epoch; on Ctrl-C); with --export-onnx also best_<run>.onnx, the best weights as a streaming
network (one time step per call, the membrane state as inputs and outputs: st.export_streaming).
"""

import argparse
import fcntl
import importlib.util
import math
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

import snn_triton as st
from snn_triton import data as datalib
from snn_triton import distributed, engine, study
from snn_triton.objective import PRECISIONS
from snn_triton.surrogate import SEED_SURROGATES


def positive(kind):
    def parse(text):
        value = kind(text)
        if not (value > 0 and math.isfinite(value)):  # inf trains to NaN; nan compares false
            what = "a finite number > 0" if kind is float else "> 0"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


# torch.manual_seed takes up to 2**64 - 1, and a run's batch order seeds a generator with
# seed * 100_003 + epoch (snn_triton.data.EpochPlan): 2**32 seeds leave room for any epoch.
SEEDS = 2**32


def seed(text):
    value = int(text)
    if not 0 <= value < SEEDS:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**32), got {text}")
    return value


def share(text):
    """I/N: the runs I, I+N, I+2N, ... of a study."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be I/N with integers 0 <= I < N, got {text}") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"must be I/N with integers 0 <= I < N, got {text}")
    return i, n


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--surrogate",
        choices=[*st.SURROGATES, "all"],
        default="all",
        help="surrogate gradient, or all: the seed's three (superspike, sigmoid, esser) one after the other "
        "(default: all)",
    )
    p.add_argument("--compile", action="store_true", help="run the training step under torch.compile (mode default)")
    p.add_argument(
        "--compile-mode",
        choices=engine.COMPILE_MODES,
        default=None,
        help="torch.compile mode (implies --compile); reduce-overhead replays CUDA graphs, on CUDA only",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: convolutions and linear layers under bfloat16 autocast (default: fp32)",
    )
    p.add_argument(
        "--data-on-device",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="hold the dataset in device memory and make the batches there (default: on CUDA "
        "when it takes at most a quarter of the free memory)",
    )
    p.add_argument("--epochs", type=positive(int), default=10)
    p.add_argument(
        "--batch-size",
        type=positive(int),
        default=64,
        help="the global batch; under torchrun each of the N processes takes batch-size/N",
    )
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--T", type=positive(int), default=8, help="time steps per image")
    p.add_argument(
        "--beta",
        type=positive(float),
        default=None,
        help="surrogate sharpness (default: the surrogate's own, see st.SURROGATES)",
    )
    p.add_argument(
        "--beta-scale",
        type=positive(float),
        nargs="+",
        default=None,
        metavar="F",
        help="a sweep: each surrogate's own beta times F, a run per F (their defaults differ by 10x)",
    )
    p.add_argument("--dataset", choices=datalib.DATASETS, default="cifar10")
    p.add_argument("--data-dir", default="data", help="where the datasets are (or are downloaded to)")
    p.add_argument("--no-download", action="store_true", help="never download a missing dataset")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--seed", type=seed, default=None, help="the seed of the run: initial weights, batch order (default 0)"
    )
    p.add_argument(
        "--seeds",
        type=seed,
        nargs="+",
        default=None,
        metavar="S",
        help="a study: every surrogate trained once per seed, compared seed by seed (study.json/md/png)",
    )
    p.add_argument(
        "--runs",
        type=share,
        default=(0, 1),
        metavar="I/N",
        help="train only the runs I, I+N, I+2N, ... of the study (spread a study over processes)",
    )
    p.add_argument(
        "--num-workers", type=non_negative_int, default=0, help="DataLoader processes (not used with --data-on-device)"
    )
    p.add_argument(
        "--max-steps",
        type=positive(int),
        default=None,
        help="at most this many batches per epoch, train and test (smoke runs)",
    )
    p.add_argument("--out", default="runs/seed", help="folder for metrics, plots and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument(
        "--export-onnx",
        action="store_true",
        help="write best_<run>.onnx beside best_<run>.pt: one time step per call, batch 1, the "
        "membrane state as inputs and outputs (needs the deploy extra)",
    )
    args = p.parse_args(argv)
    if args.seed is not None and args.seeds is not None:
        p.error("--seed and --seeds: give one (--seeds S [S ...] for a study)")
    args.seeds = args.seeds or [0 if args.seed is None else args.seed]
    if len(set(args.seeds)) < len(args.seeds):
        p.error(f"--seeds: each seed once, got {' '.join(map(str, args.seeds))}")
    if args.beta is not None and args.beta_scale is not None:
        p.error("--beta and --beta-scale: give one (--beta-scale multiplies each surrogate's own beta)")
    args.beta_scale = args.beta_scale or [1.0]
    if len(set(args.beta_scale)) < len(args.beta_scale):
        p.error("--beta-scale: each factor once")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available (use --device cpu)")
    world = distributed.world_size()
    if args.batch_size % world:
        p.error(f"--batch-size {args.batch_size} is the global batch: it must be divisible by the {world} processes")
    if args.device == "cuda" and distributed.local_world_size() > torch.cuda.device_count():
        p.error(
            f"torchrun started {distributed.local_world_size()} processes on a machine with "
            f"{torch.cuda.device_count()} GPUs: one GPU per process"
        )
    if (
        args.device == "cuda"
        and args.precision == "bf16"
        and not torch.cuda.is_bf16_supported(including_emulation=False)
    ):
        p.error("--precision bf16: this GPU has no bfloat16 arithmetic (Ampere or newer has)")
    if args.export_onnx:  # checked before training, not after the first run
        missing = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
        if missing:
            p.error(f"--export-onnx needs {' and '.join(missing)}: pip install -e '.[deploy]'")
    args.compile_mode = args.compile_mode or ("default" if args.compile else None)
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.device == "cpu":
        engine.keep_freed_memory()
    ranks = distributed.start(args.device)  # one process without torchrun
    try:
        train(args, ranks)
    finally:
        distributed.stop()


def train(args: argparse.Namespace, ranks: distributed.Ranks) -> None:
    def say(*text, **kwargs):  # rank 0 speaks for every process
        if ranks.main:
            print(*text, **kwargs)

    def fail(message):
        sys.exit(f"train.py: error: {message}" if ranks.main else 1)

    error = None
    with ranks.main_first():  # rank 0 downloads or unpacks the dataset, then the others read it
        try:
            data = datalib.load(args.dataset, args.data_dir, download=not args.no_download, seed=args.seeds[0])
        except datalib.DataUnavailable as unavailable:
            error = unavailable
    if ranks.any(error is not None):
        fail(error)
    device = ranks.device(args.device)
    on_device = datalib.fits_on_device(data, device) if args.data_on_device is None else args.data_on_device
    cfg = engine.Config(
        dataset=args.dataset,
        data_dir=args.data_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        T=args.T,
        beta=args.beta,
        seed=args.seeds[0],
        max_steps=args.max_steps,
        num_workers=args.num_workers,
        device=args.device,
        compile=args.compile_mode,
        precision=args.precision,
        data_on_device=on_device,
        out_dir=args.out,
        download=not args.no_download,
    )
    surrogates = list(SEED_SURROGATES) if args.surrogate == "all" else [args.surrogate]
    # The study's runs, a seed's surrogates side by side, so that a stopped study has whole seeds.
    runs = [
        (s, args.beta or st.SURROGATES[s] * scale, seed)
        for scale in args.beta_scale
        for seed in args.seeds
        for s in surrogates
    ]
    first, every = args.runs
    mine = runs[first::every]

    def config(run) -> engine.Config:
        return replace(cfg, beta=run[1], seed=run[2])

    out = Path(cfg.out_dir)
    checkpoints = {}
    ours = {engine.checkpoint_path(config(run), run[0]).name for run in runs}
    present = {p.name for p in out.glob("checkpoint_*.pt")}
    # another surrogate, beta or seed names another checkpoint, which --resume would not find
    if args.resume and (others := sorted(present - ours)):
        fail(
            f"--resume: {out} holds checkpoints of runs these arguments do not make ({', '.join(others)}: "
            "another surrogate, beta or seed): resume with the arguments they were trained with, or point "
            "--out elsewhere for a new run"
        )
    if not args.resume and (kept := sorted(present & ours)):
        # a run started again over its own checkpoint would overwrite it and its metrics
        fail(
            f"{out} holds checkpoints of these runs ({', '.join(kept)}): add --resume to continue them, "
            "or delete them (or point --out elsewhere) to start over"
        )
    if args.resume:
        try:
            checkpoints = {
                run: engine.load_checkpoint(path)
                for run in mine
                if (path := engine.checkpoint_path(config(run), run[0])).exists()
            }
        except engine.CheckpointError as broken:
            fail(broken)
        if not checkpoints and ranks.main and every == 1:
            say(f"--resume: no checkpoint in {out}: every run starts from the beginning")
    metrics_path = out / "metrics.jsonl"
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
        if every == 1:  # metrics.jsonl starts as what the checkpoints have done (nothing for a fresh run)
            rows = [m for run in mine if run in checkpoints for m in checkpoints[run]["history"]]
            engine.write_atomic(metrics_path, lambda f: f.write(engine.jsonl(rows).encode()))

    per_process = f" ({cfg.batch_size // ranks.world} in each of {ranks.world} processes)" if ranks.world > 1 else ""
    say(
        f"{cfg.dataset}, {len(data.train)} training images, T={cfg.T}, batch {cfg.batch_size}{per_process}, "
        f"{cfg.device}, {cfg.precision}, {'data on the device' if on_device else 'DataLoader'}"
        f"{f', compiled ({cfg.compile})' if cfg.compile else ''}"
        f"{f'; runs {first}, {first}+{every}, ... : {len(mine)} of {len(runs)}' if every > 1 else ''}"
    )
    if cfg.compile and (note := engine.compile_mode(cfg.compile, device)[1]):
        say(note)

    def on_epoch(metrics):
        say(engine.format_epoch(metrics, cfg.epochs), flush=True)
        if ranks.main:
            engine.append_jsonl(metrics_path, [metrics])

    splits = datalib.splits(data, device, resident=on_device, num_workers=cfg.num_workers)
    for run in mine:
        trainer = engine.Trainer(config(run), run[0], data, splits, ranks)
        if run in checkpoints:
            try:
                trainer.resume(checkpoints.pop(run))
            except (ValueError, engine.CheckpointError) as unresumable:
                fail(unresumable)
        try:
            trainer.run(on_epoch)
        except engine.Interrupted as saved:
            say(f"Interrupted: saved {saved}; continue with the same arguments and --resume", file=sys.stderr)
            sys.exit(130)  # the shell's code for a run ended by Ctrl-C
        if args.export_onnx and ranks.main:
            say(f"wrote {export_onnx(trainer)}")

    if ranks.main:
        try:
            report(runs, config, {**asdict(cfg), "seeds": args.seeds, "beta_scale": args.beta_scale}, out)
        except engine.CheckpointError as broken:  # another process's checkpoint
            fail(broken)


def export_onnx(trainer: engine.Trainer) -> Path:
    """best_<run>.onnx beside best_<run>.pt: its weights as st.export_streaming's network, for one
    image (batch 1) on a CPU."""
    best = engine.best_path(trainer.cfg, trainer.surrogate)
    model = st.BasicCSNN(
        T=trainer.model.T,
        surrogate=trainer.surrogate,
        beta=trainer.beta,
        in_channels=trainer.model.in_channels,
        num_classes=trainer.model.net[9].out_features,
        image_size=trainer.model.image_size,
    )
    model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True)["model"])
    image = torch.zeros(1, model.in_channels, model.image_size, model.image_size)
    return st.export_streaming(model.eval(), image, best.with_suffix(".onnx")).onnx_path


def report(runs, config, study_config: dict, out: Path) -> None:
    """Writes the outputs of the whole study from the checkpoints in `out` (this process's runs
    and those that other processes of a split study finished), one process at a time, so the
    last one to finish writes every run."""
    with open(out / ".reports.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        histories, absent = {}, []
        for run in runs:
            path = engine.checkpoint_path(config(run), run[0])
            if not path.exists():
                absent.append(path.name)
                continue
            ckpt = engine.load_checkpoint(path)
            if any(ckpt["config"][k] != getattr(config(run), k) for k in engine.SAME_ON_RESUME):
                absent.append(f"{path.name} (another problem)")
                continue
            histories[run] = ckpt["history"]
        engine.write_atomic(
            out / "metrics.jsonl", lambda f: f.write(engine.jsonl([m for h in histories.values() for m in h]).encode())
        )
        summary, study_ = study.write_reports(histories, study_config, out)
    print(study.format_summary(summary, study_))
    unfinished = [engine.run_name(*run) for run, h in histories.items() if len(h) < study_config["epochs"]]
    if absent or unfinished:
        print(
            f"Not in the study yet: {', '.join(absent + unfinished)} (missing or unfinished: run them, with "
            "--runs or --resume, and the last process to finish writes the whole study)"
        )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing new saved
        print("Interrupted", file=sys.stderr)
        sys.exit(130)
