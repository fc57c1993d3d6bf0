#!/usr/bin/env python
"""Train BasicCSNN as the seed experiment does (CIFAR-10, T=8, Adam 1e-3, batch 64, 10 epochs) and
compare surrogate gradients.

    python train.py --surrogate all                  # the seed's comparison of the three surrogates
    python train.py --surrogate sigmoid --compile    # one surrogate, the whole net under torch.compile
    python train.py --dataset fashion-mnist          # offline (apt-get install dataset-fashion-mnist)
    python train.py --resume                         # continue an interrupted run (same --out)

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
from snn_triton import engine


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
    p.add_argument("--compile", action="store_true", help="run the model under torch.compile")
    p.add_argument("--epochs", type=positive(int), default=10)
    p.add_argument("--batch-size", type=positive(int), default=64)
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--T", type=positive(int), default=8, help="time steps per image")
    p.add_argument("--beta", type=positive(float), default=None,
                   help="surrogate sharpness (default: the surrogate's own, see st.SURROGATES)")
    p.add_argument("--dataset", choices=datalib.DATASETS, default="cifar10")
    p.add_argument("--data-dir", default="data", help="where the datasets are (or are downloaded to)")
    p.add_argument("--no-download", action="store_true", help="never download a missing dataset")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="data loader processes")
    p.add_argument("--max-steps", type=positive(int), default=None,
                   help="at most this many batches per epoch, train and test (smoke runs)")
    p.add_argument("--out", default="runs/seed", help="folder for metrics, plots and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    elif args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available (use --device cpu)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = engine.Config(dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs, batch_size=args.batch_size,
                        lr=args.lr, T=args.T, beta=args.beta, seed=args.seed, max_steps=args.max_steps,
                        num_workers=args.num_workers, device=args.device, compile=args.compile, out_dir=args.out,
                        download=not args.no_download)
    surrogates = list(st.SURROGATES) if args.surrogate == "all" else [args.surrogate]
    try:
        data = datalib.load(cfg.dataset, cfg.data_dir, download=cfg.download, seed=cfg.seed)
    except datalib.DataUnavailable as error:
        sys.exit(f"train.py: error: {error}")

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = {}
    if args.resume:
        checkpoints = {s: engine.load_checkpoint(path) for s in surrogates
                       if (path := engine.checkpoint_path(cfg, s)).exists()}
    # metrics.jsonl starts as what the checkpoints have done (nothing for a fresh run).
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    engine.append_jsonl(metrics_path, [m for s in surrogates if s in checkpoints for m in checkpoints[s]["history"]])

    print(f"{cfg.dataset}, {len(data.train)} training images, T={cfg.T}, batch {cfg.batch_size}, "
          f"{cfg.device}{', compiled' if cfg.compile else ''}")

    def on_epoch(metrics):
        print(engine.format_epoch(metrics, cfg.epochs), flush=True)
        engine.append_jsonl(metrics_path, [metrics])

    histories = {}
    for surrogate in surrogates:
        trainer = engine.Trainer(cfg, surrogate, data)
        if surrogate in checkpoints:
            try:
                trainer.resume(checkpoints[surrogate])
            except ValueError as error:
                sys.exit(f"train.py: error: {error}")
        try:
            histories[surrogate] = trainer.run(on_epoch)
        except engine.Interrupted as saved:
            print(f"Interrupted: saved {saved}; continue with the same arguments and --resume", file=sys.stderr)
            sys.exit(130)  # the shell's code for a run ended by Ctrl-C

    summary = engine.summarize(histories, asdict(cfg))
    engine.write_summary(summary, histories, out)
    print(engine.format_summary(summary))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # before training started, or a second Ctrl-C: nothing new saved
        print("Interrupted", file=sys.stderr)
        sys.exit(130)
