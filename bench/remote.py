"""Implementations that need a Python process of their own: spikingjelly 2.0.0 is the package
``spikingjelly`` too, so it cannot share one with 0.0.0.0.14 (the test oracle and a peer). The
libraries suite starts this file with 2.0.0's folder first on the path and drives it over a pipe,
so that its calls interleave with everyone else's in the same run. One JSON line per request and
per answer (answers are marked, so a library printing to stdout cannot garble them):

    {"names": [T, compiled]}              -> {"names": [...], "left_out": {name: why}}   what this process runs
    {"prepare": [name, T, neurons]}       -> {"check", "first_call_seconds", "note"} | {"disagree"} | {"error"}
    {"time": [name, phase]}               -> {"seconds": float}                 one call (CPU)
    {"bench": [name, phase]}              -> {"seconds": float, "peak_bytes": int}   (GPU)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARK = "@@remote "


class Remote:
    """The other process, seen from the benchmark: the same calls as libraries.prepare's results."""

    def __init__(self, path_first: str):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [path_first, os.environ.get("PYTHONPATH")])))
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "remote.py")], env=env, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )

    def ask(self, **request) -> dict:
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(MARK):
                return json.loads(line[len(MARK) :])
        raise RuntimeError(f"the remote process ended (exit code {self.process.wait()})")

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def serve() -> None:
    sys.path.insert(0, str(HERE))
    import conftest  # noqa: F401  bench/conftest.py: the import paths, threads and memory settings of the parent
    from agree import Disagree
    from libraries import names, prepare
    from measure import elapsed_seconds, gpu_figures

    prepared = {}
    for line in sys.stdin:
        ((op, args),) = json.loads(line).items()
        if op == "names":
            run, left_out = names(*args)
            answer = {
                "names": [name for name in run if name.startswith("spikingjelly")],
                "left_out": {name: why for name, why in left_out.items() if name.startswith("spikingjelly")},
            }
        elif op == "prepare":
            try:
                prepared[args[0]] = done = prepare(*args)
                first_call = round(done.first_call_seconds, 3)
                answer = {"check": done.check, "first_call_seconds": first_call, "note": done.note}
            except Disagree as error:
                answer = {"disagree": str(error)}
            except Exception as error:
                answer = {"error": f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]}"}
        elif op == "time":
            answer = {"seconds": elapsed_seconds(prepared[args[0]].calls[args[1]])}
        else:
            answer = gpu_figures(prepared[args[0]].calls[args[1]])
        print(MARK + json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
