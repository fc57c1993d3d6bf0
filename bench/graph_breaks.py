"""Count the graph breaks of torch.compile(st.BasicCSNN) (torch._dynamo.explain); exit 1 if any.

    python bench/graph_breaks.py [--device cuda]

The GPU check's last stage: on CUDA the LIF layers are the Triton kernels, which the CPU tests
(tests/) never trace. Sizes are the seed experiment's (tiny under SNN_BENCH_TINY=1).
"""

import argparse
import sys

import torch
from workloads import E2E

import snn_triton as st


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    device = parser.parse_args().device
    model = st.BasicCSNN(T=E2E["T"], surrogate="sigmoid", image_size=E2E["image_size"]).to(device)
    x = torch.randn(E2E["batch"], 3, E2E["image_size"], E2E["image_size"], device=device)
    explanation = torch._dynamo.explain(model)(x)
    print(f"graph breaks: {explanation.graph_break_count} (graphs: {explanation.graph_count}, device: {device})")
    for reason in explanation.break_reasons:
        print(f"  {reason.reason}")
    return 1 if explanation.graph_break_count else 0


if __name__ == "__main__":
    sys.exit(main())
