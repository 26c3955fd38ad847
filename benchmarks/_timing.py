"""Shared plumbing of the benchmark scripts: interleaved timing, machine facts, reports.

Timing protocol (why ratios measured here are fair on a small, shared, noisy machine):

* every case is warmed up first (XLA compilation, allocator warm-up) and never timed then;
* the cases being compared run *interleaved*: each round times every case once, in a
  freshly shuffled order, so a burst of load from another process hits all of them alike;
* a case's time is the median over rounds; the spread is the inter-quartile range;
* a ratio a/b is the median of the per-round ratios t_a/t_b (paired samples from the same
  round), with its inter-quartile range: this is what the scripts report and compare to goals;
* process CPU time is recorded beside wall time: on a machine shared with other busy
  processes, CPU-time ratios are much steadier (waiting for a core is not counted).

Reports: every script prints a markdown table, writes JSON to ``benchmarks/results/`` (not in
git) and rewrites its own section of ``benchmarks/RESULTS.md`` (in git), delimited by
``<!-- name:start -->`` / ``<!-- name:end -->`` markers.
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT_DIR = HERE / "results"
DEFAULT_MARKDOWN = HERE / "RESULTS.md"


def add_common_args(parser, repeats, warmup=2):
    """Options every script shares (repeats, warm-up, where the reports go)."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed rounds per case")
    parser.add_argument("--warmup", type=int, default=warmup, help="untimed calls per case")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT_DIR), help="JSON output folder")
    parser.add_argument(
        "--markdown",
        default=str(DEFAULT_MARKDOWN),
        help="markdown file whose section this script rewrites ('' to skip)",
    )
    return parser


def new_parser(description, repeats, warmup=2, xla_flag=True):
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    if xla_flag:
        parser.add_argument("--no-xla-off", action="store_true", help="time XLA on only")
    return add_common_args(parser, repeats, warmup)


def parse(parser, argv):
    """Parsed options; ``xla_modes`` is (True,) or (True, False) when ``--no-xla-off`` exists."""
    args = parser.parse_args(argv)
    if hasattr(args, "no_xla_off"):
        args.xla_modes = (True,) if args.no_xla_off else (True, False)
    return args


def config_of(args):
    """The options worth recording in the JSON (not where the reports went)."""
    return {k: v for k, v in vars(args).items() if k not in ("out_dir", "markdown")}


def _quartiles(values):
    if len(values) == 1:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def summarize(values):
    """Median, quartiles, min and relative spread (IQR / median) of a list of seconds/ratios."""
    values = sorted(values)
    med = statistics.median(values)
    q1, q3 = _quartiles(values)
    return {
        "median": med,
        "q1": q1,
        "q3": q3,
        "min": values[0],
        "max": values[-1],
        "rel_iqr": (q3 - q1) / med if med else 0.0,
        "n": len(values),
    }


def measure(cases, repeats, warmup=2, seed=0, min_round_s=0.0):
    """Time callables side by side.

    Args:
        cases: dict name -> zero-argument callable that runs one step *to completion* (it must
            block on its result, e.g. by converting the output to NumPy).
        repeats: timed rounds; each round times every case once, in a shuffled order.
        warmup: untimed calls per case before the first round.
        min_round_s: when > 0, a case whose single call is shorter than this is called
            several times per sample (``inner``) and the mean per call is recorded.

    Returns:
        dict name -> {"times": [seconds per call per round], "inner": k, **summary}.
    """
    inner = {}
    for name, fn in cases.items():
        for _ in range(max(warmup, 1)):
            fn()
        start = time.perf_counter()
        fn()
        single = time.perf_counter() - start
        inner[name] = max(1, int(min_round_s / single)) if min_round_s > 0 and single > 0 else 1
    rng = random.Random(seed)
    times = {name: [] for name in cases}
    cpu = {name: [] for name in cases}
    order = list(cases)
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            fn, k = cases[name], inner[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(k):
                fn()
            times[name].append((time.perf_counter() - start) / k)
            cpu[name].append((time.process_time() - start_cpu) / k)
    return {
        name: {"times": t, "cpu_times": cpu[name], "cpu": summarize(cpu[name]),
               "inner": inner[name], **summarize(t)}
        for name, t in times.items()
    }


def paired_ratio(results, numerator, denominator, key="times"):
    """Median and IQR of the per-round ratios t_numerator / t_denominator.

    ``key="cpu_times"`` uses this process's CPU time (all threads) instead of wall time: far
    less sensitive to other processes competing for the cores, but it also counts the time
    worker threads spin while waiting.
    """
    a, b = results[numerator][key], results[denominator][key]
    return summarize([x / y for x, y in zip(a, b)])


def paired_ratios(results, numerator, denominator):
    """{"wall": ..., "cpu": ...}: :func:`paired_ratio` on wall time and on CPU time."""
    return {
        "wall": paired_ratio(results, numerator, denominator),
        "cpu": paired_ratio(results, numerator, denominator, "cpu_times"),
    }


def time_with_without(names, make_case, repeats, warmup=2, seed=0, suffix=" (unchecked)", **fields):
    """Each named case with a check and without it, all timed interleaved (:func:`measure`).

    Args:
        names: the cases (one row each, in this order).
        make_case: ``make_case(name, checked)`` -> a ready (already compiled) zero-argument
            callable returning the step's loss as a float; called with ``checked`` True and False.
        suffix: appended to a name for its unchecked arm in the timing keys.
        **fields: put into every row as they are (e.g. ``num_classes``).

    Returns:
        One dict per name: ``loss``, ``**fields``, ``time_checked``, ``time_unchecked``,
        ``ratio`` (:func:`paired_ratios`, with ÷ without) and ``first_losses`` (each arm's
        first value, [with, without]).
    """
    cases, values = {}, {}
    for name in names:
        for checked in (True, False):
            key = name if checked else name + suffix
            cases[key] = make_case(name, checked)
            values[key] = cases[key]()
    results = measure(cases, repeats, warmup, seed)
    return [{
        "loss": name, **fields,
        "time_checked": results[name], "time_unchecked": results[name + suffix],
        "ratio": paired_ratios(results, name, name + suffix),
        "first_losses": [values[name], values[name + suffix]],
    } for name in names]


def with_without_table(rows, goal=1.01):
    """Markdown table of :func:`time_with_without` rows (with ``num_classes``): both times, the
    wall and CPU ratios, and whether the CPU ratio meets ``goal``."""
    headers = ["C", "loss", "step, with check", "step, without", "with ÷ without (wall)",
               "with ÷ without (CPU)", f"< {100 * (goal - 1):.0f} %?"]
    out = [[f"{r['num_classes']:,}", r["loss"], fmt_ms(r["time_checked"]),
            fmt_ms(r["time_unchecked"]), fmt_ratio(r["ratio"]["wall"]), fmt_ratio(r["ratio"]["cpu"]),
            "yes" if r["ratio"]["cpu"]["median"] <= goal else "**no**"] for r in rows]
    return markdown_table(headers, out)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(extra_modules=()):
    """CPU model, usable cores, load average, library versions and UTC date of this run."""
    import keras
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "cpu": cpu_model(),
        "cores": cores,
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
    }
    for module in extra_modules:
        info[module.__name__] = getattr(module, "__version__", "?")
    return info


def machine_line(info):
    extras = ", ".join(
        f"{k} {v}"
        for k, v in info.items()
        if k not in ("date_utc", "cpu", "cores", "load_avg_1m", "python", "keras_backend")
    )
    load = info.get("load_avg_1m")
    load = f", 1-min load average at start {load:.1f}" if load is not None else ""
    return (
        f"{info['date_utc']} UTC, {info['cpu']}, {info['cores']} cores{load}; "
        f"Python {info['python']}, {extras}."
    )


def fmt_ms(stats):
    """'12.3 ms ±4%' from a summary (± = half the IQR relative to the median)."""
    return f"{stats['median'] * 1e3:.2f} ms ±{50 * stats['rel_iqr']:.0f}%"


def fmt_ratio(stats):
    return f"{stats['median']:.3f} [{stats['q1']:.3f}–{stats['q3']:.3f}]"


def markdown_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(out_dir, name, payload):
    if not out_dir:
        return None
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = path / f"{name}_{stamp}.json"
    target.write_text(json.dumps(payload, indent=2, default=str))
    (path / f"{name}_latest.json").write_text(json.dumps(payload, indent=2, default=str))
    return target


def update_markdown(md_path, section, body):
    """Replace (or append) this script's section of the results markdown file."""
    if not md_path:
        return None
    path = Path(md_path)
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    block = f"{start}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path


def report(args, name, title, notes, table_md, payload):
    """Print the table, write the JSON and the markdown section; returns the payload."""
    body = f"## {title}\n\n{notes.strip()}\n\n{table_md}\n"
    print(body, flush=True)
    json_path = write_json(args.out_dir, name, payload)
    md = update_markdown(args.markdown, name, body)
    if json_path:
        print(f"JSON: {json_path}")
    if md:
        print(f"markdown section '{name}' written to {md}")
    return payload
