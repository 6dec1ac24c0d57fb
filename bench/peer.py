"""The connector and Node-RED doing the same job side by side, in interleaved rounds of one run.

    .venv/bin/python bench/peer.py [--peers DIR] [--peers-dir DIR] [-n 2000] [-c 32] [--rounds 3]
                                   [--database-url URL] [--web-concurrency N]

The job (the peer's flow, /work/shared/peers/nodered/flows.json): verify a Leaditio signature, map
five fields, POST them to a CRM, answer. The connector runs as the Procfile runs it: the `web:` line
(gunicorn with connector/gunicorn_conf.py) and `connector worker`, both started by one shell so one
process tree holds both, with an `http` destination posting to the peers' sink (bench/peer_mapping.yaml
is the flow's mapping). The connector answers once the lead is stored and its worker POSTs after;
Node-RED POSTs before it answers and keeps nothing.

The peers' scripts (`--peers`, default $PEERS or ../shared/peers beside the repo: README.md,
install.sh, run-peer.sh, sink.py, loadgen.py) are used as they are; Node-RED must already be
installed in `--peers-dir` ($PEERS_DIR) by their install.sh. Nothing of Node-RED is in this repo.

Each round: `loadgen.py` sends N signed webhooks at concurrency C to the connector, waits until the
sink holds all N, then the same against Node-RED. CPU is read from /proc (user + system of each
process tree, not wall time: the machine is shared) from before the first request until the sink
holds the last lead, so the worker's delivering after the last answer counts. RSS is sampled every
0.25 s over both runs. Before the rounds, a cold run of 200 webhooks right after each side starts
shows whether the first requests are as fast as the rest.

The secret is `testsecret-0123456789` for both sides: the connector refuses webhook secrets under
16 characters, so the peer's default `testsecret` cannot be used.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SECRET = "testsecret-0123456789"
TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children(p)
    return found


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def cpu_s(pids: list[int]) -> float:
    """user + system seconds of these processes and their reaped children (a gunicorn worker restarted)."""
    total = 0.0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / TCK  # utime stime cutime cstime
        except (OSError, IndexError, ValueError):
            continue
    return total


def rss_mib(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


class Peak(threading.Thread):
    """The highest summed RSS of each named group of processes, sampled every 0.25 s."""

    def __init__(self, groups: dict[str, Any]):
        super().__init__(daemon=True)
        self.groups, self.peak = groups, {name: 0.0 for name in groups}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for name, pids in self.groups.items():
                self.peak[name] = max(self.peak[name], rss_mib(pids()))
            self.stop_event.wait(0.25)

    def stop(self) -> dict[str, float]:
        self.stop_event.set()
        self.join(2)
        return self.peak


def wait_for_401(url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=2)
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer an unsigned POST with 401 within {timeout:.0f} s")


class Connector:
    """gunicorn (the Procfile's web line) and `connector worker`, children of one shell."""

    def __init__(self, folder: Path, crm: str, database_url: str | None, web_concurrency: int | None):
        self.folder, self.port = folder, free_port()
        config = {"database": {"url": database_url or f"sqlite:///{folder / 'connector.db'}"},
                  "sources": {"leaditio": {"marketplace": "leaditio", "secrets": ["${LEADITIO_WEBHOOK_SECRET}"]}},
                  "destinations": {"crm": {"type": "http", "url": crm, "mapping": str(ROOT / "bench" / "peer_mapping.yaml")}},
                  "routes": [{"source": "leaditio", "destination": "crm"}]}
        (folder / "config.yaml").write_text(json.dumps(config))
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "CONNECTOR_CONFIG": str(folder / "config.yaml"), "LEADITIO_WEBHOOK_SECRET": SECRET,
                    "PORT": str(self.port), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
        if web_concurrency:
            self.env["WEB_CONCURRENCY"] = str(web_concurrency)
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        subprocess.run(["connector", "db", "upgrade"], env=self.env, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        procfile = {line.split(":", 1)[0]: line.split(":", 1)[1].strip()
                    for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line}
        self.web_command = procfile["web"]
        log = open(folder / "connector.log", "wb")  # noqa: SIM115 - the processes' log lines, as in production
        self.shell = subprocess.Popen(["bash", "-c", f"{procfile['web']} & {procfile['worker']} & wait"],
                                      env=self.env, cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}/webhooks/leaditio"
        wait_for_401(self.url)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (self.web_pids() and self.worker_pids()):
            time.sleep(0.1)

    def _child(self, word: str) -> list[int]:
        return [p for p in children(self.shell.pid) if word in cmdline(p)]

    def web_pids(self) -> list[int]:
        return [p for root in self._child("gunicorn") for p in tree(root)]

    def worker_pids(self) -> list[int]:
        return [p for root in self._child("worker") for p in tree(root)]

    def stop(self) -> None:
        try:
            os.killpg(self.shell.pid, signal.SIGTERM)
            self.shell.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.shell.pid, signal.SIGKILL)


class NodeRed:
    def __init__(self, peers: Path, peers_dir: Path, crm: str):
        self.port = free_port()
        self.env = {**os.environ, "PEERS_DIR": str(peers_dir), "CRM_URL": crm, "LEADITIO_SECRET": SECRET,
                    "PORT": str(self.port)}
        self.script = peers / "run-peer.sh"
        subprocess.run([str(self.script), "nodered", "start"], env=self.env, check=True, stdout=subprocess.DEVNULL)
        self.pid = int(subprocess.run([str(self.script), "nodered", "pid"], env=self.env, check=True,
                                      capture_output=True, text=True).stdout.strip())
        self.url = f"http://127.0.0.1:{self.port}/leaditio"

    def pids(self) -> list[int]:
        return tree(self.pid)

    def stop(self) -> None:
        subprocess.run([str(self.script), "nodered", "stop"], env=self.env, check=False)


def load(peers: Path, url: str, sink: str, n: int, c: int, pid: int, settle: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(peers / "loadgen.py"), "--url", url, "-n", str(n), "-c", str(c),
                          "--secret", SECRET, "--sink", sink, "--pid", str(pid), "--settle", str(settle),
                          "--max-seconds", "600"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(peers: Path, side: Any, groups: dict[str, Any], sink: str, n: int, c: int) -> dict[str, Any]:
    """One run against one side: loadgen's figures, CPU ms per lead per group, peak RSS per group."""
    pids = {name: get() for name, get in groups.items()}
    peak = Peak(groups)
    peak.start()
    before = {name: cpu_s(p) for name, p in pids.items()}
    started = time.monotonic()
    result = load(peers, side.url, sink, n, c, side.shell.pid if isinstance(side, Connector) else side.pid,
                  settle=max(60.0, n / 50))
    wall = time.monotonic() - started
    after = {name: cpu_s(get()) for name, get in groups.items()}
    peaks = peak.stop()
    result["cpu_ms_per_lead"] = {name: (after[name] - before[name]) * 1000 / n for name in groups}
    result["peak_rss_mib"] = peaks
    result["to_last_lead_s"] = wall
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=Path, default=Path(os.environ.get("PEERS", ROOT.parent / "shared" / "peers")),
                        help="folder with the peers' scripts (default: $PEERS or ../shared/peers)")
    parser.add_argument("--peers-dir", type=Path, default=Path(os.environ["PEERS_DIR"]) if os.environ.get("PEERS_DIR")
                        else None, help="where install.sh put Node-RED (default: $PEERS_DIR)")
    parser.add_argument("-n", type=int, default=2000, help="webhooks per run")
    parser.add_argument("-c", type=int, default=32, help="concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temporary folder")
    parser.add_argument("--web-concurrency", type=int, default=None, help="WEB_CONCURRENCY (default: the Procfile's)")
    args = parser.parse_args()
    if args.peers_dir is None:
        raise SystemExit("set --peers-dir or PEERS_DIR to where the peers' install.sh put Node-RED")

    folder = Path(tempfile.mkdtemp(prefix="bench-peer-"))
    sink_port = free_port()
    sink = subprocess.Popen([sys.executable, str(args.peers / "sink.py"), "--port", str(sink_port)],
                            stdout=subprocess.DEVNULL)
    sink_url = f"http://127.0.0.1:{sink_port}"
    crm = f"{sink_url}/crm"
    time.sleep(0.5)
    connector = nodered = None
    rows: list[tuple[dict[str, Any], dict[str, Any]]] = []
    try:
        connector = Connector(folder, crm, args.database_url, args.web_concurrency)
        cold_c = measure(args.peers, connector, {"receiver": connector.web_pids, "worker": connector.worker_pids},
                         sink_url, 200, args.c)
        nodered = NodeRed(args.peers, args.peers_dir, crm)
        cold_n = measure(args.peers, nodered, {"node-red": nodered.pids}, sink_url, 200, args.c)
        print(f"cold start, first 200 webhooks: connector p99 {cold_c['p99_ms']} ms, Node-RED p99 {cold_n['p99_ms']} ms",
              flush=True)
        for round_ in range(args.rounds):
            c = measure(args.peers, connector, {"receiver": connector.web_pids, "worker": connector.worker_pids},
                        sink_url, args.n, args.c)
            n = measure(args.peers, nodered, {"node-red": nodered.pids}, sink_url, args.n, args.c)
            rows.append((c, n))
            print(f"round {round_ + 1}: " + line(c, n), flush=True)
    finally:
        if connector:
            connector.stop()
        if nodered:
            nodered.stop()
        sink.terminate()
    summarise(rows, cold_c, cold_n, args)


def line(c: dict[str, Any], n: dict[str, Any]) -> str:
    cc, nc = c["cpu_ms_per_lead"], n["cpu_ms_per_lead"]
    return (f"connector {c['rps']:.0f}/s p99 {c['p99_ms']:.1f} ms, CPU {cc['receiver'] + cc['worker']:.2f} ms/lead "
            f"(receiver {cc['receiver']:.2f}, worker {cc['worker']:.2f}), peak {sum(c['peak_rss_mib'].values()):.0f} MiB "
            f"(web {c['peak_rss_mib']['receiver']:.0f}, worker {c['peak_rss_mib']['worker']:.0f}), "
            f"{c['sink_unique']}/{c['n']} in the CRM after {c['to_last_lead_s']:.1f} s | "
            f"Node-RED {n['rps']:.0f}/s p99 {n['p99_ms']:.1f} ms, CPU {nc['node-red']:.2f} ms/lead, "
            f"peak {n['peak_rss_mib']['node-red']:.0f} MiB, {n['sink_unique']}/{n['n']} in the CRM")


def summarise(rows: list[tuple[dict[str, Any], dict[str, Any]]], cold_c: dict[str, Any], cold_n: dict[str, Any],
              args: argparse.Namespace) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    c_rps, n_rps = med([c["rps"] for c, _ in rows]), med([n["rps"] for _, n in rows])
    c_p99, n_p99 = med([c["p99_ms"] for c, _ in rows]), med([n["p99_ms"] for _, n in rows])
    c_recv = med([c["cpu_ms_per_lead"]["receiver"] for c, _ in rows])
    c_work = med([c["cpu_ms_per_lead"]["worker"] for c, _ in rows])
    c_cpu = med([sum(c["cpu_ms_per_lead"].values()) for c, _ in rows])
    n_cpu = med([n["cpu_ms_per_lead"]["node-red"] for _, n in rows])
    c_rss = max(sum(c["peak_rss_mib"].values()) for c, _ in rows)
    n_rss = max(n["peak_rss_mib"]["node-red"] for _, n in rows)
    ratios = [(c["rps"] / n["rps"], sum(c["cpu_ms_per_lead"].values()) / n["cpu_ms_per_lead"]["node-red"])
              for c, n in rows]
    print(f"\nmedians of {len(rows)} rounds, {args.n} webhooks at c={args.c} each "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: the machine is shared)")
    print(f"{'':24}{'connector':>12}{'Node-RED':>12}{'connector/Node-RED':>22}")
    print(f"{'webhooks/s':24}{c_rps:12.0f}{n_rps:12.0f}{c_rps / n_rps:22.2f}   (higher is better)")
    print(f"{'p99 ms':24}{c_p99:12.1f}{n_p99:12.1f}{c_p99 / n_p99:22.2f}   (lower is better)")
    print(f"{'CPU ms per lead':24}{c_cpu:12.2f}{n_cpu:12.2f}{c_cpu / n_cpu:22.2f}   (lower is better)")
    print(f"{'  receiver':24}{c_recv:12.2f}")
    print(f"{'  worker':24}{c_work:12.2f}")
    print(f"{'peak RSS MiB':24}{c_rss:12.0f}{n_rss:12.0f}{c_rss / n_rss:22.2f}   (lower is better)")
    print(f"{'first 200: p99 ms':24}{cold_c['p99_ms']:12.1f}{cold_n['p99_ms']:12.1f}")
    print("per round, connector/Node-RED: webhooks/s " + ", ".join(f"{r:.2f}" for r, _ in ratios)
          + "; CPU per lead " + ", ".join(f"{r:.2f}" for _, r in ratios))


if __name__ == "__main__":
    main()
