"""Turn results files into the performance tables of docs/performance.md (Markdown on stdout).

    python bench/report.py                          # the newest file of each device in bench/results/
    python bench/report.py FILE.json [--plot roofline.png]

Ratios first: every cell is a speedup over the suite's baseline (results.BASELINES) measured in the
same run, so > 1 is faster than the plain PyTorch code; in the libraries suite, over the fastest
peer of the same run and case (> 1: faster than every other library). Absolute times appear only for GPU rows
(CPU times on a shared machine say little; their ratios hold). The roofline table sets our path's
achieved bandwidth (the traffic model's bytes over the median time) against the copy bandwidth
measured in the same run.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from results import BASELINES, OURS, RESULTS_DIR, latest_rows, load

CASE_FIELDS = ("neuron", "T", "neurons", "batch", "images", "dtype", "surrogate")
TITLES = {
    "lif_scan": "LIF scan",
    "spike": "spike",
    "train": "training",
    "neuron_scan": "neuron scan",
    "zoo_train": "SEW-ResNet-18 of spikingjelly's zoo, training",
}
PHASES = ["copy", "fwd", "bwd", "fwd+bwd", "step", "epoch"]


def case_of(row) -> tuple:
    return tuple(row.get(f) for f in CASE_FIELDS)


def fmt_case(field, value) -> str:
    if field in ("neurons", "images") and value >= 1024 and value & (value - 1) == 0:
        return f"2^{value.bit_length() - 1}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def fmt_seconds(seconds) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 1 else f"{seconds:.2f} s"


def impl_order(impl: str) -> tuple:
    """Ours first, then the peers, the baseline last."""
    return (not impl.startswith("snn_triton"), impl in BASELINES.values(), impl)


class Report:
    def __init__(self, data: dict):
        self.device = data["device"]
        self.gpu = any(r.get("impl") == OURS["cuda"] for run in data["runs"] for r in run["rows"])
        self.env = data["runs"][-1]["env"]
        self.envs = {run["id"]: run["env"] for run in data["runs"]}
        self.rows = latest_rows(data)
        # (run, op, phase, case, impl) -> seconds: ratios are only formed inside one run.
        self.seconds = {
            (run["id"], r["op"], r["phase"], case_of(r), r["impl"]): r["seconds"]
            for run in data["runs"]
            for r in run["rows"]
            if r.get("seconds")
        }
        # run -> copy bandwidth (bytes/s): each roofline row is set against its own run's copy.
        self.copy_bw = {
            run["id"]: r["bytes"] / r["seconds"]
            for run in data["runs"]
            for r in run["rows"]
            if r["op"] == "copy" and r.get("seconds")
        }
        self.notes: list[str] = []

    def ratio(self, row, over: str) -> float | None:
        """Seconds of `over` on the row's case in the row's run, over the row's seconds."""
        other = self.seconds.get((row["run"], row["op"], row["phase"], case_of(row), over))
        return other / row["seconds"] if other and row.get("seconds") else None

    def speedup(self, row) -> str:
        if row.get("seconds") is None:
            note = f"{row['impl']}: {row.get('note', 'not measured')}"
            self.notes += [note] * (note not in self.notes)
            return f"n/a[{self.notes.index(note) + 1}]"
        ratio = self.ratio(row, BASELINES[row["op"]])
        return f"{ratio:.2f}×" if ratio else "—"

    def speedup_tables(self, suite: str) -> list[str]:
        out = []
        groups = defaultdict(list)
        for r in self.rows:
            if r["suite"] == suite and r["op"] in BASELINES:
                groups[(r["op"], r["phase"])].append(r)
        for (op, phase), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], PHASES.index(kv[0][1]))):
            fields = [f for f in CASE_FIELDS if any(r.get(f) is not None for r in rows)]
            impls = sorted({r["impl"] for r in rows if r["impl"] != BASELINES[op]}, key=impl_order)
            timed = [i for i in impls if i.startswith("snn_triton")] + [BASELINES[op]] if self.gpu else []
            cells = defaultdict(dict)
            for r in rows:
                cells[case_of(r)][r["impl"]] = r
            out += [
                f"**{TITLES[op]}, {phase}**: speedup over {BASELINES[op]} (same run)",
                "",
                "| " + " | ".join(fields + impls + [f"{i} time" for i in timed]) + " |",
                "|" + "---|" * (len(fields) + len(impls) + len(timed)),
            ]
            for case, by_impl in sorted(cells.items(), key=lambda kv: [str(v).zfill(12) for v in kv[0]]):
                head = [fmt_case(f, v) for f, v in zip(CASE_FIELDS, case) if f in fields]
                ratios = [self.speedup(by_impl[i]) if i in by_impl else "—" for i in impls]
                times = [
                    fmt_seconds(by_impl[i]["seconds"]) if by_impl.get(i, {}).get("seconds") else "—" for i in timed
                ]
                out.append("| " + " | ".join(head + ratios + times) + " |")
            out.append("")
        return out

    def roofline_table(self) -> list[str]:
        """GPU only: on a CPU our path is not the kernels the byte counts model, and the working sets
        of a CPU run fit in its last-level cache."""
        rows = [r for r in self.rows if r["impl"] == OURS["cuda"] and r.get("bytes") and r.get("seconds")]
        if not self.copy_bw or not rows:
            return []
        copies = ", ".join(f"{bw / 1e9:.0f}" for bw in self.copy_bw.values())
        out = [
            f"**Roofline** ({OURS['cuda']}): bytes = the kernels' traffic model (each input read once, each "
            f"output written once) over the median time, against a large `torch copy_` (read + write: "
            f"{copies} GB/s) measured in the same run.",
            "",
            "| op | phase | T | neurons | dtype | surrogate | time | GB/s | % of copy |",
            "|" + "---|" * 9,
        ]
        for r in sorted(
            rows,
            key=lambda r: (
                r["op"],
                PHASES.index(r["phase"]),
                r.get("surrogate") or "",
                r["dtype"],
                r.get("T") or 0,
                r["neurons"],
            ),
        ):
            gbps = r["bytes"] / r["seconds"] / 1e9
            share = r["bytes"] / r["seconds"] / self.copy_bw[r["run"]] if r["run"] in self.copy_bw else None
            cells = [
                r["op"],
                r["phase"],
                str(r.get("T") or "—"),
                fmt_case("neurons", r["neurons"]),
                r["dtype"],
                r.get("surrogate") or "—",
                fmt_seconds(r["seconds"]),
                f"{gbps:.0f}",
                f"{share:.0%}" if share else "—",
            ]
            out.append("| " + " | ".join(cells) + " |")
        return out + [""]

    def fastest_peers(self) -> dict:
        """(run, phase, case) -> (seconds, impl) of the fastest other library there: the libraries' baseline."""
        fastest = {}
        for r in self.rows:
            if r["suite"] == "libraries" and r.get("seconds") and not r["impl"].startswith("snn_triton"):
                key = (r["run"], r["phase"], case_of(r))
                fastest[key] = min(fastest.get(key, (r["seconds"], r["impl"])), (r["seconds"], r["impl"]))
        return fastest

    def libraries_tables(self) -> list[str]:
        """Rows: implementations; columns: cases; cells: speedup over the fastest peer of the same
        run and case; then, on a GPU, the peak memory of a forward+backward; the compiled
        implementations' first call; what each was checked to agree on."""
        rows = [r for r in self.rows if r["suite"] == "libraries"]
        if not rows:
            return []
        fastest = self.fastest_peers()
        cases = sorted({case_of(r) for r in rows}, key=lambda c: [str(v).zfill(12) for v in c])
        heads = [f"T={fields['T']}, {fields['neurons']:,}" for fields in (dict(zip(CASE_FIELDS, c)) for c in cases)]
        impls = sorted({r["impl"] for r in rows}, key=impl_order)
        cell = {(r["impl"], r["phase"], case_of(r)): r for r in rows}

        def table(title, phase, show, names=impls, extra=()):
            out = [title, "", "| implementation | " + " | ".join(heads) + " |", "|---|" + "---|" * len(cases)]
            for impl in names:
                cells = [show(cell[(impl, phase, case)]) if (impl, phase, case) in cell else "—" for case in cases]
                if any(c != "—" for c in cells):
                    out.append(f"| {impl} | " + " | ".join(cells) + " |")
            return out + list(extra) + [""]

        def speedup(r):
            if r.get("seconds") is None:
                return self.speedup(r)
            best = fastest.get((r["run"], r["phase"], case_of(r)))
            return f"{best[0] / r['seconds']:.2f}×" if best else "—"

        out = []
        for phase in ("fwd", "fwd+bwd"):
            times = [
                fmt_seconds(fastest[key][0])
                if (key := next((k for k in fastest if k[1] == phase and k[2] == case), None))
                else "—"
                for case in cases
            ]
            out += table(
                f"**Linear + LIF, {phase}** (batch {rows[0]['batch']}, float32): speedup over the fastest "
                "other library in the same run (1.00× is that library)",
                phase,
                speedup,
                extra=[f"| *time of the fastest other library* | {' | '.join(times)} |"] if self.gpu else [],
            )
            if self.gpu:
                out += table(
                    f"**Linear + LIF, {phase}**: peak memory of one call beyond the inputs and weights",
                    phase,
                    lambda r: f"{r['peak_bytes'] / 2**20:,.0f} MiB" if r.get("peak_bytes") is not None else "—",
                )
        out += table(
            "**First forward+backward of the compiled models** (compile included; a warm inductor cache "
            "makes it shorter)",
            "fwd+bwd",
            lambda r: f"{r['first_call_seconds']:.1f} s" if r.get("first_call_seconds") else "—",
            names=[i for i in impls if i.endswith("compiled")],
        )
        checks = defaultdict(set)
        for r in rows:
            if r.get("check"):
                checks[r["impl"]].add(r["check"])
        out += ["Checked before timing (bench/agree.py), on each case's input:", ""]
        out += [f"- {impl}: {'; or '.join(sorted(found))}" for impl, found in sorted(checks.items())] + [""]
        return out

    def headline(self) -> str:
        """The few figures the project sets targets for (docs/performance.md), for the end of the GPU check."""
        ours = OURS["cuda" if self.gpu else "cpu"]
        lines = [f"copy bandwidth: {', '.join(f'{bw / 1e9:.0f}' for bw in self.copy_bw.values())} GB/s"] * self.gpu
        lif = [r for r in self.rows if r["op"] == "lif_scan" and r["phase"] == "fwd+bwd" and r.get("seconds")]
        mine = [r for r in lif if r["impl"] == ours]
        if mine:
            n = max(r["neurons"] for r in mine)
            for dtype in sorted({r["dtype"] for r in mine}):
                at_n = sorted((r for r in mine if r["neurons"] == n and r["dtype"] == dtype), key=lambda r: r["T"])
                case = f"LIF fwd+bwd {fmt_case('neurons', n)} {dtype}"
                if self.gpu:
                    shares = [
                        f"T={r['T']} {r['bytes'] / r['seconds'] / self.copy_bw[r['run']]:.0%}"
                        for r in at_n
                        if r["run"] in self.copy_bw
                    ]
                    lines.append(f"{case}: {ours} at " + ", ".join(shares) + " of copy bandwidth (target 85%)")
                for peer in (
                    r
                    for r in lif
                    if r["impl"].startswith("spikingjelly")
                    and r["neurons"] == n
                    and r["dtype"] == dtype
                    and r["T"] == at_n[-1]["T"]
                ):
                    ratio = self.ratio(peer, ours)
                    if ratio:
                        lines.append(f"{case} T={peer['T']}: {ours} over {peer['impl']} {1 / ratio:.2f}×")
        fastest = self.fastest_peers()
        for (run, phase, case), (seconds, peer) in sorted(fastest.items(), key=lambda kv: kv[0][1:]):
            for r in self.rows:
                if (
                    (r["run"], r["phase"], case_of(r)) == (run, phase, case)
                    and r["impl"].startswith("snn_triton")
                    and r.get("seconds")
                    and phase == "fwd+bwd"
                ):
                    lines.append(
                        f"Linear+LIF {phase} T={r['T']} {r['neurons']}: {r['impl']} over the fastest other "
                        f"library ({peer}) {seconds / r['seconds']:.2f}×"
                    )
        for r in self.rows:
            if r["op"] == "train" and r["impl"] != BASELINES["train"] and r.get("seconds"):
                ratio = self.ratio(r, BASELINES["train"])
                absolute = f" ({fmt_seconds(r['seconds'])})" if self.gpu else ""
                lines.append(
                    f"train {r['phase']}: {r['impl']}{absolute}"
                    + (f", speedup over the seed {ratio:.2f}×" if ratio else "")
                )
        return "\n".join(lines)

    def settings(self, suite: str) -> str:
        """How the runs behind a suite's rows were set up: threads, and freed memory kept (CPU)."""
        found = set()
        for r in self.rows:
            if r["suite"] == suite:
                env = self.envs[r["run"]]
                threads = env.get("threads")
                found.add(
                    f"{threads} thread"
                    + "s" * (threads != 1)
                    + (", freed memory kept" if env.get("kept_freed_memory") else "")
                )
        return f"{suite}: " + " / ".join(sorted(found)) if found else ""

    def markdown(self) -> str:
        env = self.env
        settings = "; ".join(filter(None, (self.settings(suite) for suite in ("kernels", "end_to_end", "libraries"))))
        head = [
            f"### {self.device}",
            "",
            f"torch {env.get('torch')}, triton {env.get('triton', '—')}; {settings}"
            + (", TINY sizes (dry run)" if env.get("tiny") else ""),
            "",
        ]
        body = (
            self.speedup_tables("kernels")
            + self.roofline_table()
            + self.speedup_tables("end_to_end")
            + self.libraries_tables()
        )
        notes = [f"[{i}] {note}" for i, note in enumerate(self.notes, 1)]
        return "\n".join(head + body + (notes + [""] if notes else []))

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ours = OURS["cuda" if self.gpu else "cpu"]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        series = defaultdict(list)
        for r in self.rows:
            if r["impl"] == ours and r["op"] == "lif_scan" and r.get("seconds"):
                series[(r["phase"], r["dtype"], r["T"])].append((r["neurons"], r["bytes"] / r["seconds"] / 1e9))
        for (phase, dtype, T), points in sorted(series.items()):
            ax.plot(*zip(*sorted(points)), marker="o", label=f"LIF {phase}, {dtype}, T={T}")
        for bw in self.copy_bw.values():
            ax.axhline(bw / 1e9, color="k", ls="--", label="copy bandwidth")
            ax.axhline(0.85 * bw / 1e9, color="grey", ls=":", label="85% of copy")
        ax.set(xscale="log", xlabel="neurons", ylabel="GB/s (traffic model)", title=f"{ours}, {self.device}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)


def newest_per_device(folder: Path) -> list[Path]:
    newest = {}
    for path in sorted(folder.glob("*.json")):  # names start with the date
        newest[path.name.split("_", 1)[1]] = path
    return sorted(newest.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--plot", type=Path, help="also draw the LIF roofline of the (last) file to this PNG")
    parser.add_argument("--headline", action="store_true", help="only the figures with a target (docs/performance.md)")
    args = parser.parse_args(argv)
    for path in args.files or newest_per_device(RESULTS_DIR):
        report = Report(load(path))
        print(report.headline() if args.headline else report.markdown())
        if args.plot:
            report.plot(args.plot)


if __name__ == "__main__":
    main()
