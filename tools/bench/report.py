"""The report of tools/bench/run: joins the JSON lines the bench programs wrote into a
directory by scenario, and prints the table, the performance issue's goals as ratios of
this run's figures, the cost-growth sweep, and draws the sweep with gnuplot.

    python3 tools/bench/report.py DIR [--json] [--plot=FILE]

Files in DIR (see tools/bench/run): mpx.* (mpx's figures), anchor.<n>.<name> (an
anchor's, named by each line's "anchor" field or else by <name>), floors, sweep.* (the
sweep's points, each with "item_bytes" and "workers"), loadavg (/proc/loadavg before
and after). Each holds one JSON line per
scenario: {"scenario", "unit", "values": [one per repetition], ...}.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile


def read_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def figures(rec):
    v = rec["values"]
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "values": v}


def ratio(unit, mpx, anchor):
    """The anchor's time over mpx's, or mpx's rate over the anchor's: > 1, mpx better."""
    return mpx / anchor if unit.endswith("/s") else anchor / mpx


def who(anchor):
    """An anchor's name for the goals and the sweep: "Open MPI (no CMA)" is Open MPI
    (the table says which it was)."""
    return "Open MPI" if anchor.startswith("Open MPI") else anchor


def join(out):
    """The table's rows: every mpx scenario with each of its anchors, then the floors."""
    files = sorted(os.listdir(out))
    mpx = [r for f in files if f.startswith("mpx.") for r in read_lines(os.path.join(out, f))]
    anchors = {}  # scenario -> [(anchor name, record)], in file order
    for f in files:
        if f.startswith("anchor."):
            for r in read_lines(os.path.join(out, f)):
                anchors.setdefault(r["scenario"], []).append((r.get("anchor", f.split(".", 2)[2]), r))
    rows, problems = [], []
    for r in mpx:
        m = figures(r)
        found = anchors.pop(r["scenario"], [])
        if not found:
            if not r.get("mpx_only"):
                problems.append(f"no anchor figures for '{r['scenario']}'")
            rows.append(dict(kind="mpx only", scenario=r["scenario"], unit=r["unit"], mpx=m,
                             anchor=None, anchor_figures=None, ratio=None))
        for name, a in found:
            if a["unit"] != r["unit"]:
                sys.exit(f"bench: '{r['scenario']}': mpx unit {r['unit']}, {name} unit {a['unit']}")
            p = figures(a)
            rows.append(dict(kind="comparison", scenario=r["scenario"], unit=r["unit"], mpx=m,
                             anchor=name, anchor_figures=p,
                             ratio=ratio(r["unit"], m["median"], p["median"])))
    for scenario in anchors:
        problems.append(f"anchor figures for '{scenario}', which mpx did not measure")
    if "floors" in files:
        for r in read_lines(os.path.join(out, "floors")):
            rows.append(dict(kind="floor", scenario=r["scenario"], unit=r["unit"], mpx=figures(r),
                             anchor=None, anchor_figures=None, ratio=None))
    return rows, problems


# --- the performance issue's goals ---------------------------------------------------

ROUND_TRIP = "apply_async(square).get() round trip p50"
MAP_1M = "map(square, 1M ints), default chunks"
CHUNKSIZE_1 = "map(square, 100k ints, chunksize=1)"
PAYLOADS = "imap_unordered(len, 2,000 x 1 MiB strings, chunksize=1)"
BUSY_UNIX = "floor: unix stream socketpair ping-pong p50, 2 processes, both busy-polling"
POOL_CREATE = "Pool({}) create + first task + teardown"
IDLE_PSS = "idle pool worker memory (PSS per worker), Pool({})"
IDLE_USS = "idle pool worker memory (USS per worker), Pool(2)"


def goals(rows):
    """One row per goal whose figures this run has: what was measured, the ratio the goal
    is stated in, its target, and whether it is met."""
    mpx, anchor, floor = {}, {}, {}
    for r in rows:
        if r["kind"] == "floor":
            floor[r["scenario"]] = r["mpx"]["median"]
            continue
        mpx[r["scenario"]] = r["mpx"]["median"]
        if r["anchor"]:
            anchor[(r["scenario"], who(r["anchor"]))] = r["anchor_figures"]["median"]
    out = []

    def goal(text, measured, value, target, at_most=False):
        out.append(dict(kind="goal", goal=text, measured=measured, ratio=value, target=target,
                        met=value <= target if at_most else value >= target,
                        at_most=at_most))

    mpi = lambda s: anchor.get((s, "Open MPI"))
    if ROUND_TRIP in mpx and BUSY_UNIX in floor:
        rt, busy = mpx[ROUND_TRIP], floor[BUSY_UNIX]
        goal("apply_async round trip p50 ≤ 1.5× two busy-polled unix ping-pongs",
             f"{rt:.3g} µs vs 2 × {busy:.3g} µs", rt / (2 * busy), 1.5, at_most=True)
    if ROUND_TRIP in mpx and mpi(ROUND_TRIP):
        goal("apply_async round trip p50 within 2.5× Open MPI's",
             f"{mpx[ROUND_TRIP]:.3g} µs vs {mpi(ROUND_TRIP):.3g} µs",
             mpx[ROUND_TRIP] / mpi(ROUND_TRIP), 2.5, at_most=True)
    if MAP_1M in mpx and mpi(MAP_1M):
        goal("map 1M ints ≥ 0.5× the Open MPI farm",
             f"{mpx[MAP_1M] / 1e6:.3g} M vs {mpi(MAP_1M) / 1e6:.3g} M items/s",
             mpx[MAP_1M] / mpi(MAP_1M), 0.5)
    if CHUNKSIZE_1 in mpx and mpi(CHUNKSIZE_1):
        goal("map chunksize=1 ≥ 1.5× the Open MPI farm (one item per message)",
             f"{mpx[CHUNKSIZE_1] / 1e3:.3g} k vs {mpi(CHUNKSIZE_1) / 1e3:.3g} k items/s",
             mpx[CHUNKSIZE_1] / mpi(CHUNKSIZE_1), 1.5)
    memcpy = anchor.get((PAYLOADS, "memcpy, one core"))
    if PAYLOADS in mpx and memcpy:
        goal("1 MiB payloads through a pool ≥ 50% of memcpy bandwidth",
             f"{mpx[PAYLOADS]:,.0f} vs {memcpy:,.0f} MiB/s", mpx[PAYLOADS] / memcpy, 0.5)
    sizes = [n for n in (1, 2, 4, 8, 16, 32) if POOL_CREATE.format(n) in mpx]
    if {8, 16, 32} <= set(sizes):
        # Linear: each added worker costs the same. The cost per added worker between
        # 16 and 32 over the one between 8 and 16 is 1 when linear, 2 when quadratic.
        t = {n: mpx[POOL_CREATE.format(n)] for n in sizes}
        low, high = (t[16] - t[8]) / 8, (t[32] - t[16]) / 16
        goal("Pool(N) create + teardown linear in N (cost per added worker, 16→32 over 8→16)",
             " ".join(f"N={n}: {t[n]:.3g} ms;" for n in sizes)
             + f" per added worker {low:.3g} then {high:.3g} ms",
             high / low if low > 0 else float("inf"), 1.25, at_most=True)
    pss = [(n, mpx[IDLE_PSS.format(n)]) for n in (2, 32) if IDLE_PSS.format(n) in mpx]
    if pss:
        # USS beside it: the worker's own pages, which the neighbours do not move.
        uss = f"; USS Pool(2): {mpx[IDLE_USS]:.3g} MiB" if IDLE_USS in mpx else ""
        goal("PSS per idle worker ≤ 1 MiB",
             "; ".join(f"Pool({n}): {v:.3g} MiB" for n, v in pss) + uss,
             max(v for _, v in pss), 1.0, at_most=True)
    return out


# --- the sweep -----------------------------------------------------------------------


def sweep_points(out):
    """{(item_bytes, workers): {who: median MiB/s}}, who = "mpx" or the anchor's name;
    and the number of items of each point."""
    points, items = {}, {}
    for f in sorted(os.listdir(out)):
        if not f.startswith("sweep."):
            continue
        for r in read_lines(os.path.join(out, f)):
            key = (int(r["item_bytes"]), int(r["workers"]))
            points.setdefault(key, {})[who(r.get("anchor", "mpx"))] = statistics.median(r["values"])
            items[key] = int(r["items"])
    return points, items


STD_THREAD = "std::thread pool (1 process)"
MEMCPY = "memcpy, one core"


def size_name(n, short=False):
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n >> shift}{unit[0] if short else ' ' + unit}"
    return f"{n}{'' if short else ' '}B"


def print_sweep(points, items):
    print()
    print("Cost growth: map(echo) over items of each size, Python's default chunks; MiB/s "
          "of items mapped (medians), and mpx over Open MPI")
    print()
    print("| item size | workers | items | mpx MiB/s | mpx items/s | Open MPI MiB/s | mpx / MPI "
          "| std::thread MiB/s | memcpy MiB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (size, workers), medians in sorted(points.items()):
        m, mpi = medians.get("mpx"), medians.get("Open MPI")
        cell = lambda x: f"{x:,.0f}" if x is not None else "—"
        print(f"| {size_name(size)} | {workers} | {items[(size, workers)]:,} | {cell(m)} "
              f"| {cell(m * (1 << 20) / size if m else None)} | {cell(mpi)} "
              f"| {f'{m / mpi:.2f}×' if m and mpi else '—'} | {cell(medians.get(STD_THREAD))} "
              f"| {cell(medians.get(MEMCPY))} |")


def plot(points, rows, path):
    """Two panels (three when the run has the Pool(N) rows): MiB/s against item size with
    2 workers; MiB/s against worker count for three item sizes; Pool(N) start-up."""
    with tempfile.TemporaryDirectory() as out:
        draw(points, rows, out, path)
    print(f"bench: plot written to {path}", file=sys.stderr)


def draw(points, rows, out, path):
    def data(name, pairs):
        with open(os.path.join(out, name), "w") as f:
            for x, y in pairs:
                f.write(f"{x} {y}\n")
        return os.path.join(out, name)

    sizes = sorted({s for s, _ in points})
    workers = sorted({w for _, w in points})
    by_size = {name: data(f"size.{i}", [(s, points[(s, 2)][name]) for s in sizes
                                         if name in points.get((s, 2), {})])
               for i, name in enumerate(["mpx", "Open MPI", STD_THREAD])}
    memcpy = data("size.memcpy", [(s, points[(s, 1)][MEMCPY]) for s in sizes
                                  if MEMCPY in points.get((s, 1), {})])
    shown = [s for s in (64, 64 << 10, 16 << 20) if s in sizes]
    by_workers = {(s, name): data(f"workers.{s}.{name.replace(' ', '_')}",
                                  [(w, points[(s, w)][name]) for w in workers
                                   if name in points.get((s, w), {})])
                  for s in shown for name in ("mpx", "Open MPI")}
    create = {name: [] for name in ("mpx", "Python multiprocessing")}
    for r in rows:
        for n in (1, 2, 4, 8, 16, 32):
            if r["scenario"] == POOL_CREATE.format(n):
                if r["kind"] == "comparison" and r["anchor"] == "Python multiprocessing":
                    create["Python multiprocessing"].append((n, r["anchor_figures"]["median"]))
                if not any(x == n for x, _ in create["mpx"]):
                    create["mpx"].append((n, r["mpx"]["median"]))
    panels = 3 if create["mpx"] else 2
    size_tics = ", ".join(f'"{size_name(s, short=True)}" {s}' for s in sizes)
    script = [
        f"set terminal pngcairo size {560 * panels},520 font 'sans,10'",
        f"set output '{path}'",
        f"set multiplot layout 1,{panels} title 'mpx cost growth "
        "(map(echo) over fixed-size strings, default chunks; medians)'",
        "set grid", "set key top left",
        "set logscale xy", f"set xtics ({size_tics})", "set xlabel 'item size'",
        f"set xrange [{sizes[0] / 2}:{sizes[-1] * 2}]",
        "set ylabel 'MiB/s of items mapped'",
        "set title '2 workers (memcpy: one core)'",
        "plot " + ", ".join([
            f"'{by_size['mpx']}' with linespoints lw 2 title 'mpx Pool(2)'",
            f"'{by_size['Open MPI']}' with linespoints lw 2 title 'Open MPI farm'",
            f"'{by_size[STD_THREAD]}' with linespoints title 'std::thread pool'",
            f"'{memcpy}' with lines dt 2 title 'memcpy'"]),
        "unset logscale x", "set logscale x 2", "set xtics (1, 2, 4, 8)", "set xrange [0.8:10]",
        "set xlabel 'workers (2 cores)'", "set title 'by worker count'", "set key top right",
        "plot " + ", ".join(
            f"'{by_workers[(s, name)]}' with linespoints lc {i + 1} "
            f"dt {1 if name == 'mpx' else 2} title '{name} {size_name(s)}'"
            for i, s in enumerate(shown) for name in ("mpx", "Open MPI")),
    ]
    if panels == 3:
        script += [
            "unset logscale", "set xtics (1, 2, 4, 8, 16, 32)", "set xrange [0:33]",
            "set xlabel 'N'",
            "set ylabel 'ms'", "set title 'Pool(N) create + first task + teardown'",
            "set key top left",
            "plot " + ", ".join(f"'{data('create.' + str(i), create[name])}' with linespoints "
                                f"title '{name}'" for i, name in enumerate(create) if create[name]),
        ]
    script.append("unset multiplot")
    subprocess.run(["gnuplot"], input="\n".join(script), text=True, check=True)


# --- output --------------------------------------------------------------------------


def f(x):
    return f"{x:,.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def cell(fig):
    return f"{f(fig['median'])} ({f(fig['min'])}–{f(fig['max'])})"


def main():
    out = sys.argv[1]
    as_json = "--json" in sys.argv[2:]
    plot_path = next((a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--plot=")), None)
    rows, problems = join(out)
    goal_rows = goals(rows)
    points, items = sweep_points(out)
    for p in problems:
        print(f"bench: {p}", file=sys.stderr)
    if plot_path and points:
        plot(points, rows, plot_path)
    if as_json:
        sweep = [dict(kind="sweep", item_bytes=s, workers=w, items=items[(s, w)], unit="MiB/s",
                      medians=medians) for (s, w), medians in sorted(points.items())]
        print(json.dumps(rows + goal_rows + sweep, indent=1))
        return
    if rows:
        print("| scenario | unit | mpx median (min–max) | anchor | anchor median (min–max) "
              "| ratio (>1: mpx better) |")
        print("|---|---|---|---|---|---|")
    for r in rows:
        if r["kind"] == "comparison":
            print(f"| {r['scenario']} | {r['unit']} | {cell(r['mpx'])} | {r['anchor']} "
                  f"| {cell(r['anchor_figures'])} | {r['ratio']:.2f}× |")
        elif r["kind"] == "floor":
            print(f"| {r['scenario']} | {r['unit']} | {cell(r['mpx'])} | n/a (floor) | — | — |")
        else:
            print(f"| {r['scenario']} | {r['unit']} | {cell(r['mpx'])} | — | — | — |")
    if goal_rows:
        print()
        print("| goal | measured (medians) | ratio | target | met |")
        print("|---|---|---|---|---|")
        for g in goal_rows:
            print(f"| {g['goal']} | {g['measured']} | {g['ratio']:.2f} "
                  f"| {'≤' if g['at_most'] else '≥'} {g['target']} | {'yes' if g['met'] else 'no'} |")
    if points:
        print_sweep(points, items)
    load = os.path.join(out, "loadavg")
    if os.path.exists(load):
        with open(load) as f:
            averages = [line.split()[:3] for line in f if line.strip()]
        print()
        print("Load average (1, 5, 15 min) before and after the run: "
              + "; ".join(" ".join(a) for a in averages))


if __name__ == "__main__":
    main()
