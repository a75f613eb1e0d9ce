"""The benchmark's results as plain-text tables (pure: a results dict in, a string out)."""
from __future__ import annotations

MB = 1e6


def table(header: list[str], rows: list[list], right: set[int] = frozenset()) -> str:
    """Columns padded to their widest cell; indices in `right` are right-aligned."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def render(results: dict) -> str:
    parts = [render_machine(results)]
    for key, fn in (("throughput", render_throughput), ("overhead", render_overhead),
                    ("memory", render_memory), ("scaling", render_scaling),
                    ("growth", render_growth), ("tail", render_tail)):
        if key in results:
            parts.append(fn(results[key]))
    return "\n\n".join(parts) + "\n"


def render_machine(results: dict) -> str:
    m = results["machine"]
    end = m.get("load_average_end")
    return (f"Machine: {m['cpu_count']} CPUs, torch {m['torch']} (default {m['torch_default_threads']} "
            f"threads), torchvision {m['torchvision']}, ray {m['ray']}; load average "
            f"{_load(m['load_average_start'])} at start, {_load(end) if end else '-'} at end"
            + ("  [--quick: smoke sizes, not figures]" if results.get("quick") else ""))


def _load(values) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def render_throughput(t: dict) -> str:
    head = (f"(a) Train throughput: baseline net, Adam 1e-3, batch 256, final ReLU, 1 epoch over "
            f"{t['images']:,} training images, train loop only; median of {t['repeats']}")
    rows = [[r["transform"], r["name"], f"{r['images_per_second']:,.0f}", f"{r['vs_seed']:.2f}x"]
            for r in t["rows"]]
    lines = [head, table(["transform", "set-up", "img/s", "vs seed"], rows, right={2, 3})]
    for transform, w in t["winners"].items():
        lines.append(f"{transform}: threads vs trials -> {w['winner']} wins "
                     f"(concurrent / best one-trial {w['threads']} threads = "
                     f"{w['concurrent_over_threaded']:.2f}x); fastest single trial: "
                     f"{w['fastest_single_trial']}; best set-up: {w['best_set_up']} "
                     f"({w['best_vs_seed']:.2f}x the seed loop)")
        if "fused_winner" in w:
            lines.append(f"{transform}: fused stacks, threads vs trials -> {w['fused_winner']} wins "
                         f"({w['fused_concurrent']} / {w['fused_threaded']} = "
                         f"{w['fused_concurrent_over_threaded']:.2f}x)")
    chunks = t.get("augment_chunks") or {}
    if chunks:
        lines.append("augmentation pass alone (augment+normalize, 1 thread), img/s by chunk size: "
                     + ", ".join(f"{k}: {v:,.0f}" for k, v in chunks.items()))
    evals = t.get("eval_batches") or {}
    if evals:
        lines.append("evaluating a fused x4 stack on the test split (1 thread), seconds by batch: "
                     + ", ".join(f"{k}: {v:.2f} s" for k, v in evals.items()))
    sub = t.get("subnormal_steps")
    if sub:
        lines.append(f"forward + backward with subnormal products (weights x 1e-20, 1 thread): "
                     f"{sub['kept']:.0f} ms kept, {sub['flushed']:.0f} ms flushed to zero "
                     f"(normal weights: {sub['normal']:.0f} ms)")
    return "\n".join(lines)


def render_overhead(o: dict) -> str:
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"  # noqa: E731
    sec = lambda v: "-" if v is None else f"{v:.1f} s"  # noqa: E731
    rows = [
        ["wall time of python -m sweep.grid", sec(o["wall_s"])],
        ["in-trial time (epoch seconds, once per Ray trial)", sec(o["in_trial_s"])],
        ["  of which training", sec(o["in_trial_training_s"])],
        [f"overhead = 1 - in-trial / (wall x {o['concurrent']})", pct(o["overhead"])],
        ["tuner.fit time (run.json)", sec(o["tune_fit_s"])],
        [f"overhead inside tuner.fit = 1 - in-trial / (tuner.fit x {o['concurrent']})",
         pct(o["overhead_inside_tune_fit"])],
        ["first trial running -> all done", sec(o.get("running_s"))],
        [f"overhead while trials run = 1 - in-trial / (that x {o['concurrent']})",
         pct(o.get("overhead_while_running"))],
        ["launch -> tuner.fit starts (imports, data, ray.init; +-1 s)", sec(o["before_tune_fit_s"])],
        ["launch -> first trial running", sec(o["startup_s"])],
        ["tear-down: all trials done -> exit", sec(o["teardown_s"])],
        ["mean in-trial time per trial", sec(o["mean_trial_s"])],
    ]
    head = (f"(b) Sweep overhead: {o['trials']} trials x {o.get('epochs_per_trial', 1)} epochs in "
            f"{o.get('ray_trials', '?')} "
            f"Ray trials, {o['concurrent']} at once, statuses {o['statuses']}")
    return head + "\n" + table(["figure", "value"], rows, right={1})


def render_memory(m: dict) -> str:
    runs = m["runs"]
    rows = [[f"{c} trial{'s' if c != '1' else ''} at once", _mb(r["peak_pss"]), _mb(r["peak_rss"]),
             _mb(r["at_peak_pss"]["pss_shmem"]), _mb(r["at_peak_pss"]["pss_anon"]),
             r["max_trial_workers"], r["samples"]] for c, r in runs.items()]
    rows.append(["difference (2 - 1)", _mb(m["growth_pss"], "+"), _mb(m["growth_peak_rss"], "+"),
                 _mb(m["growth_pss_shmem"], "+"), _mb(m["growth_pss_anon"], "+"), "", ""])
    head = (f"(c) Resident memory: driver + all descendants, sampled every {m['sample_every_s']} s; "
            f"dataset {m['dataset_bytes'] / MB:.0f} MB (60 000 x 3 x 32 x 32 uint8)")
    body = table(["run", "peak PSS", "peak RSS", "store PSS", "anon PSS", "trials", "samples"],
                 rows, right={1, 2, 3, 4, 5, 6})
    floor = m["worker_import_floor"]["pss_anon"]
    return "\n".join([head, body, f"a trial worker's import floor (private): {_mb(floor)}",
                      m["verdict"], "at the 2-trial peak:", _processes(runs["2"]["peak_processes"])])


def render_scaling(s: dict) -> str:
    rows = [[name, f"{r['wall_seconds']:.1f} s", f"{r['tune_fit_seconds']:.1f} s",
             str(r["ray_trials"]), ", ".join(f"{n}: {k}" for n, k in r["ray_trials_per_node"].items()),
             ", ".join(f"{n}: {_mb(b)}" for n, b in r.get("object_store_bytes_per_node", {}).items())
             or "-"]
            for name, r in (("1 node x 1 CPU", s["one_node"]), ("2 nodes x 1 CPU", s["two_nodes"]))]
    head = (f"(d) Scaling: the same grid ({s['one_node']['configurations']} configurations, "
            f"{s['epochs']} epoch(s), data fraction {s['data_fraction']:g}) on loopback clusters")
    body = table(["cluster", "wall", "in tuner.fit", "Ray trials", "Ray trials per node",
                  "object store bytes created per node"], rows, right={1, 2, 3})
    data = s["two_nodes"].get("dataset_bytes")
    lines = [head, body, f"scaling_speedup (wall 1 node / 2 nodes): "
             f"{s['scaling_speedup']:.2f}x; inside tuner.fit {s['tune_fit_speedup']:.2f}x"]
    if data:
        lines.append(f"the dataset in the object store: {_mb(data)}")
    return "\n".join(lines)


def render_growth(g: dict) -> str:
    rows = [[str(n), f"{r['wall_seconds']:.1f} s", f"{r['tune_fit_seconds']:.1f} s"]
            for n, r in g["runs"].items()]
    head = (f"(e) How cost grows: configurations of {g['epochs']} epoch(s) on "
            f"{g['data_fraction']:g} of the data, this machine, 2 Ray trials at once")
    return "\n".join([head, table(["configurations", "wall", "in tuner.fit"], rows, right={0, 1, 2}),
                      f"fit: wall = {g['fixed_seconds']:.1f} s fixed + "
                      f"{g['marginal_seconds_per_configuration']:.2f} s per configuration"])


def render_tail(t: dict) -> str:
    rows = [[f"--order {order}", f"{r['wall_seconds']:.1f} s", _or_dash(r["idle_slot_seconds_at_end"]),
             _or_dash(r["tail_seconds"])]
            for order, r in (("grid", t["grid_order"]), ("cost", t["cost_order"]))]
    head = (f"(f) Idle slots at the end: 8 trials of 1-8 units of work ({t['epochs']} epoch(s)), "
            "2 at once, in the grid's order and longest first")
    return "\n".join([head, table(["order", "wall", "idle slot-s at end", "last start to end (s)"],
                                  rows, right={1, 2, 3})])


def _or_dash(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _processes(rows: list[dict]) -> str:
    top = [[r["label"], _mb(r["pss"]), _mb(r["uss"]), _mb(r["rss"]), _mb(r["rss_shmem"])]
           for r in rows[:6]]
    return table(["process", "PSS", "USS", "RSS", "shm RSS"], top, right={1, 2, 3, 4})


def _mb(n: float, sign: str = "") -> str:
    return f"{n / MB:{sign},.0f} MB"
