#!/usr/bin/env python3
"""Measures and reports `scalekiq queues --json` against Sidekiq's Ruby API.

Driven by run.sh, which owns Redis and the seeding; standard library only.

  bench.py measure --n N --runs R --port P --scalekiq PATH --ruby-script PATH
                   --launcher PATH --workdir DIR --results FILE
                   [--tls-port T --ca-file PEM]
      Reads the seeded Redis R times with each tool (plus one unmeasured
      warm-up each), alternating which goes first, and appends one JSON line
      per tool to FILE with the medians. With --tls-port, both tools read over
      rediss://127.0.0.1:T, verifying the server against the CA in PEM; the
      harness's own commands still use the plain port P.
  bench.py baseline --runs R --launcher PATH --workdir DIR --results FILE
      Fixed costs without Redis: starting a process (/bin/true), and starting Ruby
      with require "sidekiq/api".
  bench.py report --results FILE --machine FILE --out FILE [--title TEXT]
      Writes the markdown tables to FILE and stdout.

Per read:
  commands    Redis' own count: CONFIG RESETSTAT, the read, INFO commandstats,
              summing every command's calls less the harness's one CONFIG
              RESETSTAT (Redis counts a command after it runs, so the INFO
              being answered is not in its own reply). Whatever the tool sends
              to set itself up (SELECT, CLIENT SETNAME, INFO...) is counted.
  round trips scalekiq's own counter (its debug line redis_stats); for Ruby,
              calls of Redis::Client#process, counted by sidekiq_read.rb.
  wall, CPU   of the whole process, from rusage_run (fork to wait4; user+sys).
  peak RSS    ru_maxrss of the whole process.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

LATENCY_SLACK_S = 0.050


def redis_cli(port, *args):
    res = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True, text=True, check=True)
    return res.stdout


def command_stats(port):
    """{command: calls} from INFO commandstats."""
    stats = {}
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+),", line)
        if m:
            stats[m.group(1)] = int(m.group(2))
    return stats


def parse_kv(text, keys):
    """The last line of text holding every key=value in keys, as a dict."""
    found = None
    for line in text.splitlines():
        pairs = dict(re.findall(r"(\w+)=(\S+)", line))
        if all(k in pairs for k in keys):
            found = pairs
    return found


def run_once(tool, args, workdir):
    """One measured read. Returns a dict of the figures and the parsed output."""
    if args.tls_port:
        url = f"rediss://127.0.0.1:{args.tls_port}/0"
    else:
        url = f"redis://127.0.0.1:{args.port}/0"
    env = dict(os.environ)
    if tool == "scalekiq":
        cmd = [args.scalekiq, "queues", "--json", "--redis-url", url]
        if args.tls_port:
            cmd += ["--redis-tls-ca-file", args.ca_file]
        env["SCALEKIQ_LOG_LEVEL"] = "debug"
    else:
        cmd = ["ruby", args.ruby_script, url]
        if args.tls_port:
            cmd.append(args.ca_file)
    rusage_file = os.path.join(workdir, "rusage.txt")

    redis_cli(args.port, "CONFIG", "RESETSTAT")
    started = time.time()
    res = subprocess.run([args.launcher, rusage_file, *cmd], env=env,
                         capture_output=True, text=True)
    ended = time.time()
    stats = command_stats(args.port)

    if res.returncode != 0:
        sys.exit(f"bench.py: {tool} failed (exit {res.returncode}):\n"
                 f"{res.stderr.strip()}")
    with open(rusage_file) as f:
        ru = parse_kv(f.read(), ["wall_us", "user_us", "sys_us", "maxrss_kb"])
    if ru is None:
        sys.exit(f"bench.py: no figures from rusage_run for {tool}")

    resets = stats.pop("config|resetstat", 0)
    if resets < 1:
        sys.exit("bench.py: CONFIG RESETSTAT is missing from commandstats; "
                 "is something else using this Redis?")
    if resets > 1:
        stats["config|resetstat"] = resets - 1  # not ours: the tool's

    counter = parse_kv(res.stderr + "\n" + res.stdout, ["round_trips", "commands"])
    if counter is None:
        sys.exit(f"bench.py: {tool} printed no round_trips=/commands= line; "
                 f"stderr was:\n{res.stderr.strip()}")

    json_line = next((l for l in res.stdout.splitlines() if l.startswith("[")), None)
    if json_line is None:
        sys.exit(f"bench.py: {tool} printed no JSON array on stdout")

    return {
        "commands": sum(stats.values()),
        "breakdown": stats,
        "round_trips": int(counter["round_trips"]),
        "client_commands": int(counter["commands"]),
        "read_ms": float(counter["read_ms"]) if "read_ms" in counter else None,
        "wall_ms": int(ru["wall_us"]) / 1000.0,
        "cpu_ms": (int(ru["user_us"]) + int(ru["sys_us"])) / 1000.0,
        "rss_mib": int(ru["maxrss_kb"]) / 1024.0,
        "queues": json.loads(json_line),
        "started": started,
        "ended": ended,
    }


def compare(sk, rb):
    """Mismatches between one scalekiq read and one Ruby read (list of str)."""
    problems = []
    a = {q["name"]: q for q in sk["queues"]}
    b = {q["name"]: q for q in rb["queues"]}
    if [q["name"] for q in sk["queues"]] != [q["name"] for q in rb["queues"]]:
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        if only_a or only_b:
            problems.append(f"queue names differ: only scalekiq {only_a[:5]}, "
                            f"only ruby {only_b[:5]}")
        else:
            problems.append("queue order differs")
    # Both compute now - enqueued_at at their own read time: allow for the
    # time between the two reads, plus scalekiq's rounding to 1 ms.
    slack = LATENCY_SLACK_S + (max(sk["ended"], rb["ended"]) -
                               min(sk["started"], rb["started"]))
    for name in sorted(a.keys() & b.keys()):
        qa, qb = a[name], b[name]
        if qa["size"] != qb["size"]:
            problems.append(f"{name}: size {qa['size']} (scalekiq) != {qb['size']} (ruby)")
        if abs(float(qa["latency"]) - float(qb["latency"])) > slack:
            problems.append(f"{name}: latency {qa['latency']} (scalekiq) vs "
                            f"{qb['latency']} (ruby), more than {slack:.3f} s apart")
    return problems


def measure(args):
    os.makedirs(args.workdir, exist_ok=True)
    tools = ["scalekiq", "ruby"]
    for tool in tools:  # warm-up: page cache, Ruby's gem files
        run_once(tool, args, args.workdir)

    runs = {t: [] for t in tools}
    mismatches = []
    for i in range(args.runs):
        order = tools if i % 2 == 0 else tools[::-1]
        pair = {}
        for tool in order:
            pair[tool] = run_once(tool, args, args.workdir)
            runs[tool].append(pair[tool])
        for p in compare(pair["scalekiq"], pair["ruby"]):
            mismatches.append(f"run {i + 1}: {p}")

    with open(args.results, "a") as out:
        for tool in tools:
            rs = runs[tool]
            cmds = sorted({r["commands"] for r in rs})
            trips = sorted({r["round_trips"] for r in rs})
            row = {
                "n": args.n,
                "tool": tool,
                "runs": len(rs),
                "queues_read": len(rs[0]["queues"]),
                "commands": statistics.median(r["commands"] for r in rs),
                "commands_seen": cmds,
                "breakdown": rs[0]["breakdown"],
                "client_commands": statistics.median(r["client_commands"] for r in rs),
                "round_trips": statistics.median(r["round_trips"] for r in rs),
                "round_trips_seen": trips,
                "wall_ms": statistics.median(r["wall_ms"] for r in rs),
                "cpu_ms": statistics.median(r["cpu_ms"] for r in rs),
                "rss_mib": statistics.median(r["rss_mib"] for r in rs),
                "read_ms": (statistics.median(r["read_ms"] for r in rs)
                            if rs[0]["read_ms"] is not None else None),
                "mismatches": mismatches,
            }
            out.write(json.dumps(row) + "\n")
            print(f"  {tool:8} commands={row['commands']:g} "
                  f"round_trips={row['round_trips']:g} wall={row['wall_ms']:.1f}ms "
                  f"cpu={row['cpu_ms']:.1f}ms rss={row['rss_mib']:.1f}MiB",
                  file=sys.stderr)
    if mismatches:
        print(f"  MISMATCHES ({len(mismatches)}): " + "; ".join(mismatches[:5]),
              file=sys.stderr)
    else:
        print(f"  outputs agree ({args.runs} pairs: same queues, sizes, "
              f"latencies within {LATENCY_SLACK_S * 1000:.0f} ms + elapsed)",
              file=sys.stderr)


def baseline(args):
    """Fixed costs, without Redis: starting any process, and starting Ruby
    with Sidekiq's API loaded."""
    os.makedirs(args.workdir, exist_ok=True)
    rusage_file = os.path.join(args.workdir, "rusage.txt")
    cases = [("process start (/bin/true)", ["/bin/true"]),
             ("ruby -e 'require \"sidekiq/api\"'",
              ["ruby", "-e", 'require "sidekiq/api"'])]
    with open(args.results, "a") as out:
        for label, cmd in cases:
            figures = []
            for _ in range(args.runs + 1):  # the first is a warm-up
                res = subprocess.run([args.launcher, rusage_file, *cmd],
                                     capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"bench.py: baseline {cmd} failed: {res.stderr.strip()}")
                with open(rusage_file) as f:
                    figures.append(parse_kv(f.read(), ["wall_us", "user_us", "sys_us",
                                                       "maxrss_kb"]))
            figures = figures[1:]
            row = {
                "baseline": label,
                "runs": len(figures),
                "wall_ms": statistics.median(int(r["wall_us"]) / 1000.0 for r in figures),
                "cpu_ms": statistics.median((int(r["user_us"]) + int(r["sys_us"])) / 1000.0
                                            for r in figures),
                "rss_mib": statistics.median(int(r["maxrss_kb"]) / 1024.0 for r in figures),
            }
            out.write(json.dumps(row) + "\n")
            print(f"  baseline {label}: wall={row['wall_ms']:.1f}ms "
                  f"cpu={row['cpu_ms']:.1f}ms rss={row['rss_mib']:.1f}MiB", file=sys.stderr)


def fmt_num(x):
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def fmt_ratio(a, b):
    if not b:
        return "n/a"
    r = a / b
    return f"{r:,.1f}×" if r < 10 else f"{r:,.0f}×"


def report(args):
    rows = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    with open(args.machine) as f:
        machine = f.read().strip()
    baselines = [r for r in rows if "baseline" in r]
    rows = [r for r in rows if "baseline" not in r]
    by = {(r["n"], r["tool"]): r for r in rows}
    ns = sorted({r["n"] for r in rows})

    lines = [f"# {args.title}", "", machine, "",
             "Medians per read; wall, CPU and peak RSS are of the whole process "
             "(start to exit, Ruby's start-up and `require` included). scalekiq's "
             "read also covers the process heartbeats (SMEMBERS processes, one "
             "HMGET per process) for pool usage; the Ruby snippet reads queues only.",
             "",
             "| queues | tool | Redis commands | round trips | wall ms | CPU ms | peak RSS MiB |",
             "| ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in ns:
        for tool in ("scalekiq", "ruby"):
            r = by.get((n, tool))
            if r is None:
                continue
            name = "scalekiq" if tool == "scalekiq" else "Sidekiq Ruby API"
            lines.append(f"| {n:,} | {name} | {fmt_num(r['commands'])} | "
                         f"{fmt_num(r['round_trips'])} | {r['wall_ms']:,.1f} | "
                         f"{r['cpu_ms']:,.1f} | {r['rss_mib']:.1f} |")

    lines += ["", "Ratios, Sidekiq Ruby API / scalekiq:", "",
              "| queues | commands | round trips | wall | CPU | peak RSS |",
              "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in ns:
        s, r = by.get((n, "scalekiq")), by.get((n, "ruby"))
        if s is None or r is None:
            continue
        lines.append(f"| {n:,} | " + " | ".join(
            fmt_ratio(r[k], s[k])
            for k in ("commands", "round_trips", "wall_ms", "cpu_ms", "rss_mib")) + " |")

    if baselines:
        lines += ["", "Fixed costs on the same machine, without Redis (medians):", ""]
        for b in baselines:
            lines.append(f"- {b['baseline']}: {b['wall_ms']:,.1f} ms wall, "
                         f"{b['cpu_ms']:,.1f} ms CPU, {b['rss_mib']:.1f} MiB peak RSS")

    lines += ["", "Details:", ""]
    for n in ns:
        for tool in ("scalekiq", "ruby"):
            r = by.get((n, tool))
            if r is None:
                continue
            mix = ", ".join(f"{k.upper()} {v:,}" for k, v in
                            sorted(r["breakdown"].items(), key=lambda kv: (-kv[1], kv[0])))
            extra = ""
            if r.get("read_ms") is not None:
                extra = f"; time inside Queue.all.map {r['read_ms']:,.1f} ms"
            varied = ""
            if len(r["commands_seen"]) > 1 or len(r["round_trips_seen"]) > 1:
                varied = (f"; varied between runs: commands {r['commands_seen']}, "
                          f"round trips {r['round_trips_seen']}")
            if r["client_commands"] != r["commands"]:
                varied += (f"; client counted {fmt_num(r['client_commands'])} "
                           f"commands, Redis {fmt_num(r['commands'])}")
            lines.append(f"- {n:,} queues, {tool} ({r['runs']} runs, "
                         f"{r['queues_read']:,} queues read): {mix}{extra}{varied}")
    mism = {n: by[(n, "scalekiq")]["mismatches"] for n in ns if (n, "scalekiq") in by}
    bad = {n: m for n, m in mism.items() if m}
    lines.append("")
    if bad:
        for n, m in bad.items():
            lines.append(f"- MISMATCH at {n:,} queues ({len(m)}): " + "; ".join(m[:5]))
    else:
        lines.append(f"Sanity check: in every measured pair both tools listed the same "
                     f"queues with the same sizes, and latencies within "
                     f"{LATENCY_SLACK_S * 1000:.0f} ms plus the time between the two reads.")
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--n", type=int, required=True)
    m.add_argument("--runs", type=int, required=True)
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--scalekiq", required=True)
    m.add_argument("--ruby-script", required=True)
    m.add_argument("--launcher", required=True)
    m.add_argument("--workdir", required=True)
    m.add_argument("--results", required=True)
    m.add_argument("--tls-port", type=int, default=0)
    m.add_argument("--ca-file")
    b = sub.add_parser("baseline")
    b.add_argument("--runs", type=int, required=True)
    b.add_argument("--launcher", required=True)
    b.add_argument("--workdir", required=True)
    b.add_argument("--results", required=True)
    r = sub.add_parser("report")
    r.add_argument("--results", required=True)
    r.add_argument("--machine", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--title", default="scalekiq queues vs Sidekiq's Ruby API")
    args = ap.parse_args()
    if args.cmd == "measure" and args.tls_port and not args.ca_file:
        ap.error("--tls-port needs --ca-file")
    {"measure": measure, "baseline": baseline, "report": report}[args.cmd](args)


if __name__ == "__main__":
    main()
