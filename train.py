#!/usr/bin/env python
"""Train BasicCSNN as the seed experiment does (CIFAR-10, T=8, Adam 1e-3, batch 64, 10 epochs) and
compare surrogate gradients.

    python train.py --surrogate all                  # the seed's comparison of the three surrogates
    python train.py --surrogate sigmoid --compile    # one surrogate, the whole net under torch.compile
    python train.py --dataset fashion-mnist          # offline (apt-get install dataset-fashion-mnist)
    python train.py --resume                         # continue an interrupted run (same --out)
    python train.py --compile-mode reduce-overhead --precision bf16   # a GPU: CUDA graphs, bf16 (data on it by default)
    torchrun --nproc_per_node=4 train.py --batch-size 256 --compile   # 4 GPUs (DDP), 64 images each per step

Writes to --out: metrics.jsonl (a line per epoch and surrogate), summary.json, accuracy.png,
best_<surrogate>.pt (best test accuracy) and checkpoint_<surrogate>.pt (every epoch; on Ctrl-C).
"""
import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import torch

import snn_triton as st
from snn_triton import data as datalib
from snn_triton import distributed, engine
from snn_triton.objective import PRECISIONS


def positive(kind):
    def parse(text):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


def non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--surrogate", choices=[*st.SURROGATES, "all"], default="all",
                   help="surrogate gradient, or all three one after the other (default: all)")
    p.add_argument("--compile", action="store_true", help="run the training step under torch.compile (mode default)")
    p.add_argument("--compile-mode", choices=engine.COMPILE_MODES, default=None,
                   help="torch.compile mode (implies --compile); reduce-overhead replays CUDA graphs, on CUDA only")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16: convolutions and linear layers under bfloat16 autocast (default: fp32)")
    p.add_argument("--data-on-device", action=argparse.BooleanOptionalAction, default=None,
                   help="hold the dataset in device memory and make the batches there (default: on CUDA "
                        "when it takes at most a quarter of the free memory)")
    p.add_argument("--epochs", type=positive(int), default=10)
    p.add_argument("--batch-size", type=positive(int), default=64,
                   help="the global batch; under torchrun each of the N processes takes batch-size/N")
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--T", type=positive(int), default=8, help="time steps per image")
    p.add_argument("--beta", type=positive(float), default=None,
                   help="surrogate sharpness (default: the surrogate's own, see st.SURROGATES)")
    p.add_argument("--dataset", choices=datalib.DATASETS, default="cifar10")
    p.add_argument("--data-dir", default="data", help="where the datasets are (or are downloaded to)")
    p.add_argument("--no-download", action="store_true", help="never download a missing dataset")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=non_negative_int, default=0,
                   help="DataLoader processes (not used with --data-on-device)")
    p.add_argument("--max-steps", type=positive(int), default=None,
                   help="at most this many batches per epoch, train and test (smoke runs)")
    p.add_argument("--out", default="runs/seed", help="folder for metrics, plots and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available (use --device cpu)")
    world = distributed.world_size()
    if args.batch_size % world:
        p.error(f"--batch-size {args.batch_size} is the global batch: it must be divisible by the {world} processes")
    if args.device == "cuda" and distributed.local_world_size() > torch.cuda.device_count():
        p.error(f"torchrun started {distributed.local_world_size()} processes on a machine with "
                f"{torch.cuda.device_count()} GPUs: one GPU per process")
    if args.device == "cuda" and args.precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        p.error("--precision bf16: this GPU has no bfloat16 arithmetic (Ampere or newer has)")
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
            data = datalib.load(args.dataset, args.data_dir, download=not args.no_download, seed=args.seed)
        except datalib.DataUnavailable as unavailable:
            error = unavailable
    if ranks.any(error is not None):
        fail(error)
    device = ranks.device(args.device)
    on_device = datalib.fits_on_device(data, device) if args.data_on_device is None else args.data_on_device
    cfg = engine.Config(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, T=args.T, beta=args.beta, seed=args.seed, max_steps=args.max_steps,
                        num_workers=args.num_workers, device=args.device, compile=args.compile_mode,
                        precision=args.precision, data_on_device=on_device, out_dir=args.out,
                        download=not args.no_download)
    surrogates = list(st.SURROGATES) if args.surrogate == "all" else [args.surrogate]

    out = Path(cfg.out_dir)
    checkpoints = {}
    if args.resume:
        checkpoints = {s: engine.load_checkpoint(path) for s in surrogates
                       if (path := engine.checkpoint_path(cfg, s)).exists()}
    metrics_path = out / "metrics.jsonl"
    if ranks.main:  # metrics.jsonl starts as what the checkpoints have done (nothing for a fresh run)
        out.mkdir(parents=True, exist_ok=True)
        metrics_path.unlink(missing_ok=True)
        engine.append_jsonl(metrics_path, [m for s in surrogates if s in checkpoints for m in checkpoints[s]["history"]])

    per_process = f" ({cfg.batch_size // ranks.world} in each of {ranks.world} processes)" if ranks.world > 1 else ""
    say(f"{cfg.dataset}, {len(data.train)} training images, T={cfg.T}, batch {cfg.batch_size}{per_process}, "
        f"{cfg.device}, {cfg.precision}, {'data on the device' if on_device else 'DataLoader'}"
        f"{f', compiled ({cfg.compile})' if cfg.compile else ''}")
    if cfg.compile and (note := engine.compile_mode(cfg.compile, device)[1]):
        say(note)

    def on_epoch(metrics):
        say(engine.format_epoch(metrics, cfg.epochs), flush=True)
        if ranks.main:
            engine.append_jsonl(metrics_path, [metrics])

    splits = datalib.splits(data, device, resident=on_device, num_workers=cfg.num_workers)
    histories = {}
    for surrogate in surrogates:
        trainer = engine.Trainer(cfg, surrogate, data, splits, ranks)
        if surrogate in checkpoints:
            try:
                trainer.resume(checkpoints[surrogate])
            except ValueError as unresumable:
                fail(unresumable)
        try:
            histories[surrogate] = trainer.run(on_epoch)
        except engine.Interrupted as saved:
            say(f"Interrupted: saved {saved}; continue with the same arguments and --resume", file=sys.stderr)
            sys.exit(130)  # the shell's code for a run ended by Ctrl-C

    if ranks.main:
        summary = engine.summarize(histories, asdict(cfg))
        engine.write_summary(summary, histories, out)
        print(engine.format_summary(summary))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing new saved
        print("Interrupted", file=sys.stderr)
        sys.exit(130)
