#!/usr/bin/env python3
"""Worker loops side by side: summarise a run_gateway_bench.sh GW_WORKERS="1 2" results folder.

Reads OUT/runs.tsv (the shared harness's per-run lines) and prints, per case, for `direct`
and every gw-wN target: msg/s, gateway CPU us/msg (utime+stime of all its threads, 10 ms
ticks), smtp-source and smtp-sink CPU us/msg, and how many CPUs were busy during the run
(msg/s x CPU per message: the gateway's, and everyone's together). Medians over the reps with
min-max, then the ratios of every gw-wN to the first (lowest) one, paired per rep (the
harness runs the targets of one rep back to back, order rotated).

    tests/bench/workers_summary.py OUT
"""
import csv
import statistics as st
import sys
from collections import defaultdict


def fmt(xs, nd=1, thousands=False):
    if not xs:
        return "-"
    f = (lambda v: f"{v:,.0f}") if thousands else (lambda v: f"{v:.{nd}f}")
    return f"{f(st.median(xs))} ({f(min(xs))}–{f(max(xs))})"


def main(d):
    with open(f"{d}/runs.tsv") as f:
        runs = [r for r in csv.DictReader(f, delimiter="\t") if r["ok"] == "1" and float(r["wall_s"]) > 0]
    cases, targets = [], []
    per = {}  # (case, target, rep) -> dict
    for r in runs:
        c, t = r["case"], r["target"]
        if c not in cases:
            cases.append(c)
        if t not in targets and (t == "direct" or t.startswith("gw-w")):
            targets.append(t)
        m = int(r["msgs"])
        w = float(r["wall_s"])
        cli = (float(r["cli_user_s"]) + float(r["cli_sys_s"])) * 1e6 / m
        sink = float(r["sink_cpu_s"]) * 1e6 / m
        gw = float(r["proxy_cpu_s"]) * 1e6 / m if r["proxy_cpu_s"] != "NA" else 0.0
        per[(c, t, r["rep"])] = dict(rate=m / w, gw=gw, cli=cli, sink=sink, msgs=m,
                                     gw_cpus=gw * m / w / 1e6, all_cpus=(gw + cli + sink) * m / w / 1e6)
    gws = sorted((t for t in targets if t.startswith("gw-w")),
                 key=lambda t: int(t[4:]) if t[4:].isdigit() else 999)
    order = [t for t in ["direct"] if t in targets] + gws
    out = ["| case | target | msgs/run | reps | msg/s | gateway CPU µs/msg | client CPU µs/msg "
           "| sink CPU µs/msg | CPUs busy: gateway / all |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in cases:
        for t in order:
            rows = [v for (cc, tt, _), v in per.items() if cc == c and tt == t]
            if not rows:
                continue
            g = lambda k: [r[k] for r in rows]
            out.append(f"| {c} | {t} | {rows[0]['msgs']} | {len(rows)} | {fmt(g('rate'), thousands=True)} "
                       f"| {fmt(g('gw')) if t != 'direct' else '–'} | {fmt(g('cli'))} | {fmt(g('sink'))} "
                       f"| {fmt(g('gw_cpus'), 2) if t != 'direct' else '–'} / {fmt(g('all_cpus'), 2)} |")
    out.append("")
    if len(gws) >= 2:
        base = gws[0]
        out.append(f"Paired per rep against {base} (median (min–max), then the per-rep values):")
        out.append("")
        out.append("| case | target | msg/s ratio | gateway CPU/msg ratio | per rep msg/s ratio | per rep CPU/msg ratio |")
        out.append("|---|---|---:|---:|---|---|")
        for c in cases:
            reps = sorted({rep for (cc, _, rep) in per if cc == c}, key=int)
            for t in gws[1:]:
                rr, cr = [], []
                for rep in reps:
                    a, b = per.get((c, base, rep)), per.get((c, t, rep))
                    if a and b:
                        rr.append(b["rate"] / a["rate"])
                        if a["gw"] > 0:
                            cr.append(b["gw"] / a["gw"])
                out.append(f"| {c} | {t} / {base} | {fmt(rr, 2)} | {fmt(cr, 2)} "
                           f"| {', '.join(f'{x:.2f}' for x in rr)} | {', '.join(f'{x:.2f}' for x in cr)} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
