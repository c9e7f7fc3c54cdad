"""lt-sync vs rsync over the same OpenSSH server, same run: cold sync, warm re-sync, nothing changed.

Bytes are counted on the wire by a TCP relay in front of sshd (encrypted SSH traffic, both tools
alike) in a first repetition; wall times are the best of the other repetitions, which connect to
sshd directly (the relay is a Python process: its per-chunk cost and latency weigh on a protocol
with many small packets, so times through it are reported separately). Wall time is the library
call for lt-sync (``sync_once``, no interpreter start-up) and the ``rsync -a -e ssh`` process.

    python benchmarks/bench_sync.py                 # 200 runs, 0.5 MB events each (~2 minutes)
    python benchmarks/bench_sync.py --events-mb 3   # the issue's scale (a few MB of events per run)
    python benchmarks/bench_sync.py --scale --runs 10000   # many small ended runs: local, push and pull, vs rsync

``--scale``: runs that ended a day ago (their files and folders backdated), synced local -> local, pushed
to the sshd and pulled from it, each step beside the same rsync (wall and CPU): the first copy, the first
nothing-changed pass (it reads the ended runs' summaries and records them settled), the steady nothing-changed
pass (settled runs skipped: one look at each side's folders), and ``full`` (every file listed, as without the
state). ``--first-only``: the first copy alone (to set one version of lt-sync beside another quickly).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' helpers: support.*
from support.sync import make_sshd  # noqa: E402  (the same private sshd the tests use)

from lightning_track.folder.fileio import atomic_write_json  # noqa: E402
from lightning_track.sync import sync_once  # noqa: E402


class CountingRelay:
    """127.0.0.1:port -> target port, counting bytes each way, in its own process.

    Why a separate process: a relay thread inside the benchmark process competes for the GIL with
    lt-sync's (Python) client and inflated lt-sync's times several-fold, while rsync's C client ran
    unhindered. Both tools now pay the same single-threaded relay hop.
    """

    def __init__(self, target: int, rtt_ms: float = 0.0) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--relay", str(target), "--rtt-ms", str(rtt_ms)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.port = int(self.proc.stdout.readline())

    def take(self) -> tuple[int, int]:
        time.sleep(0.2)  # let the relay drain
        self.proc.stdin.write("take\n")
        up, down = self.proc.stdout.readline().split()
        return int(up), int(down)

    def stop(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def relay_main(target: int, rtt_ms: float = 0.0) -> None:
    """The relay process: one asyncio loop, no threads; ``take`` on stdin prints and resets the counts.

    ``rtt_ms`` delays every chunk by half of it each way (a network's latency, not its bandwidth:
    chunks stay in order and do not wait for each other).
    """
    counts = {"up": 0, "down": 0}
    one_way = rtt_ms / 2000

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get())[1]:
                await asyncio.sleep(item[0] - loop.time())
                writer.write(item[1])
                await writer.drain()

        sender = asyncio.ensure_future(deliver()) if one_way else None
        try:
            while data := await reader.read(1 << 18):
                counts[direction] += len(data)
                if sender is None:
                    writer.write(data)
                    await writer.drain()
                else:
                    queue.put_nowait((loop.time() + one_way, data))
        except OSError:
            pass
        finally:
            if sender is not None:
                queue.put_nowait((0.0, b""))
                try:
                    await sender
                except OSError:
                    pass
            writer.close()

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pipe(c_reader, s_writer, "up"), pipe(s_reader, c_writer, "down"))

    async def run() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        loop = asyncio.get_running_loop()
        while await loop.run_in_executor(None, sys.stdin.readline):
            print(counts["up"], counts["down"], flush=True)
            counts["up"] = counts["down"] = 0

    asyncio.run(run())


def make_tree(root: Path, runs: int, events_mb: float) -> None:
    for i in range(runs):
        run = root / f"bench_m{i % 7}_20250101_{i // 60:02d}{i % 60:02d}00"
        (run / "tensorboard_logs").mkdir(parents=True)
        with open(run / "metrics.jsonl", "w") as out:
            for step in range(100):
                out.write(json.dumps({"step": step, "time": 1.7e9 + step, "metrics": {"train/loss": 1 / (step + 1)}})
                          + "\n")
        atomic_write_json(run / "summary.json", {"status": "completed", "final": {"loss": 0.01}})
        atomic_write_json(run / "meta.json", {"dataset": "bench", "method": f"m{i % 7}", "host": "gpu1"})
        (run / "config.yaml").write_text("lr: 0.1\nbatch_size: 32\n")
        (run / "tensorboard_logs" / "events.out.tfevents.1.gpu1").write_bytes(os.urandom(int(events_mb * 2**20)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--events-mb", type=float, default=0.5)
    parser.add_argument("--append-mb", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions (best of N, interleaved), after the"
                        " one through the byte-counting relay")
    parser.add_argument("--out", help="write the markdown section here too")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time of the emulated WAN link for the"
                        " extra cold-sync row (0 skips it)")
    parser.add_argument("--relay", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scale", action="store_true", help="many small ended runs: nothing-changed passes")
    parser.add_argument("--first-only", action="store_true", help="with --scale: the first copy only")
    parser.add_argument("--where", choices=["local", "push", "pull"], action="append",
                        help="with --scale: only these directions (repeatable; default all three)")
    parser.add_argument("--rsync-cipher", default="aes128-gcm@openssh.com",
                        help="with --scale: rsync's ssh cipher (default: the one lt-sync's asyncssh negotiates, so "
                        "both pay the same encryption; '' leaves ssh's own choice, chacha20-poly1305 with OpenSSH 9)")
    args = parser.parse_args()
    if args.relay:
        relay_main(args.relay, args.rtt_ms)
        return 0
    if args.scale:
        return scale_main(args)
    work = Path(tempfile.mkdtemp(prefix="bench_sync_"))
    os.environ["HOME"] = str(work / "home")
    server = make_sshd(work / "sshd")
    server.start()
    relay = CountingRelay(server.port)
    try:
        ssh = Path.home() / ".ssh"
        ssh.mkdir(parents=True, mode=0o700)
        key = ssh / "id_ed25519"
        shutil.copy(server.client_key, key)
        key.chmod(0o600)
        kind, blob = server.host_pub
        (ssh / "known_hosts").write_text(f"[127.0.0.1]:{relay.port} {kind} {blob}\n"
                                         f"[127.0.0.1]:{server.port} {kind} {blob}\n")
        os.environ.pop("SSH_AUTH_SOCK", None)
        src = work / "src"
        make_tree(src, args.runs, args.events_mb)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        ours_dest, rsync_dest = work / "dest_lt", work / "dest_rsync"

        def ours(port: int) -> tuple[float, int, int]:
            t0 = time.perf_counter()
            result = sync_once(src, f"{server.user}@127.0.0.1:{port}:{ours_dest}")
            wall = time.perf_counter() - t0
            assert not result.errors, result.errors
            return (wall, *relay.take())

        def theirs(port: int) -> tuple[float, int, int]:
            ssh_cmd = (f"ssh -p {port} -i {key} -o IdentitiesOnly=yes -o UserKnownHostsFile={ssh / 'known_hosts'}"
                       " -o StrictHostKeyChecking=yes -o BatchMode=yes")
            t0 = time.perf_counter()
            subprocess.run(["rsync", "-a", "-e", ssh_cmd, f"{src}/", f"{server.user}@127.0.0.1:{rsync_dest}/"],
                           check=True)
            wall = time.perf_counter() - t0
            return (wall, *relay.take())

        relay.take()
        runs = sorted(src.iterdir())
        names = ["cold sync", f"warm: one run +{args.append_mb:.1f} MB", "nothing changed"]
        timed: dict[str, list[list[float]]] = {name: [[], []] for name in names}
        counted: dict[str, list[tuple[float, int, int]]] = {}
        appended = 0
        for rep in range(args.repeat + 1):  # rep 0 through the relay (bytes), then direct (time), interleaved
            port = relay.port if rep == 0 else server.port
            for dest in (ours_dest, rsync_dest, Path.home() / ".local" / "state"):
                shutil.rmtree(dest, ignore_errors=True)
            for i, name in enumerate(names):
                if i == 1:
                    data = os.urandom(int(args.append_mb * 2**20))
                    with open(runs[(args.runs // 2 + rep) % len(runs)] / "tensorboard_logs" /
                              "events.out.tfevents.1.gpu1", "ab") as out:
                        out.write(data)
                    appended = len(data)
                pair = [ours(port), theirs(port)]
                if rep == 0:
                    counted[name] = pair
                else:
                    for k in (0, 1):
                        timed[name][k].append(pair[k][0])
        results = {name: [(min(timed[name][k]), *counted[name][k][1:]) for k in (0, 1)] for name in names}
        rows = [(name, *results[name], appended if i == 1 else None) for i, name in enumerate(names)]
        same = all((ours_dest / p.relative_to(src)).read_bytes() == p.read_bytes()
                   for p in src.rglob("*") if p.is_file())
        wan: tuple[float, float] | None = None
        if args.rtt_ms:  # a cold sync over a link with latency: per-file round trips now cost real time
            link = CountingRelay(server.port, args.rtt_ms)
            with open(ssh / "known_hosts", "a") as hosts:
                hosts.write(f"[127.0.0.1]:{link.port} {kind} {blob}\n")
            try:
                times = []
                for run_sync in (ours, theirs):
                    for dest in (ours_dest, rsync_dest, Path.home() / ".local" / "state"):
                        shutil.rmtree(dest, ignore_errors=True)
                    times.append(run_sync(link.port)[0])
                wan = (times[0], times[1])
            finally:
                link.stop()

        lines = [f"## lt-sync vs rsync ({args.runs} runs, {args.events_mb} MB events each, {total / 2**20:.0f} MB "
                 f"total; push to one local sshd; times best of {args.repeat} direct; bytes and relay times from one"
                 f" run through the counting relay; {time.strftime('%Y-%m-%d')})", "",
                 "| scenario | lt-sync time | rsync time | time ratio | through relay: lt-sync / rsync (ratio) |"
                 " lt-sync bytes up/down | rsync bytes up/down | bytes-up ratio |",
                 "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, (t1, u1, d1), (t2, u2, d2), _ in rows:
            r1, r2 = counted[name][0][0], counted[name][1][0]
            lines.append(f"| {name} | {t1:.2f} s | {t2:.2f} s | {t1 / t2:.2f}x |"
                         f" {r1:.2f} s / {r2:.2f} s ({r1 / r2:.2f}x) | {u1 / 1e6:.2f} / {d1 / 1e6:.2f} MB |"
                         f" {u2 / 1e6:.2f} / {d2 / 1e6:.2f} MB |"
                         f" {u1 / max(u2, 1):.2f}x |")
        if wan is not None:
            lines.append(f"| cold sync over a {args.rtt_ms:g} ms RTT link (one run each) | {wan[0]:.2f} s |"
                         f" {wan[1]:.2f} s | {wan[0] / wan[1]:.2f}x | - | - | - | - |")
        _, (_, warm_up, _), _, app = rows[1]
        lines += ["", f"- warm re-sync sent {warm_up / app:.3f}x the appended bytes (goal <= 1.1x plus manifest)",
                  f"- nothing-changed re-sync: {rows[2][1][0]:.2f} s (goal < 1 s)",
                  f"- cold: {rows[0][1][0] / rows[0][2][0]:.2f}x rsync's time (goal <= 1.5x)",
                  f"- mirror byte-identical to the source: {same}", ""]
        text = "\n".join(lines)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        relay.stop()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _server_cpu(pid: int | None) -> float:
    """CPU seconds of the sshd's finished sessions (each session's processes: sshd, the shell, find, tar, rsync)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _timed(step: Any, *args: Any, check: int | None, sshd: int | None = None) -> tuple[float, float, float]:
    """Wall and CPU seconds of ``step(*args)`` (this process's CPU and its children's, e.g. rsync and ssh), and
    the server side's CPU (the sshd's sessions, once they ended)."""
    server_before = _server_cpu(sshd)
    before, t0 = os.times(), time.perf_counter()
    result = step(*args)
    wall, after = time.perf_counter() - t0, os.times()
    if check is not None:  # a sync: no errors, and nothing to do after the first copy
        assert not result.errors and (check == 0 or result.files == 0), result.status_line()
    cpu = sum(after[:4]) - sum(before[:4])
    if sshd is not None:
        time.sleep(0.5)  # the session's processes end after the client closes the connection
    return wall, cpu, _server_cpu(sshd) - server_before


def _same(src: Path, mirror: Path) -> bool:
    """The mirror holds the source's files, byte for byte."""
    return all((mirror / p.relative_to(src)).read_bytes() == p.read_bytes() for p in src.rglob("*") if p.is_file())


def scale_main(args: argparse.Namespace) -> int:
    from lightning_track.sync import SyncOptions

    work = Path(tempfile.mkdtemp(prefix="bench_sync_scale_"))
    os.environ["HOME"] = str(work / "home")
    (work / "home").mkdir()
    server = make_sshd(work / "sshd")
    server.start()
    try:
        from support.sync import write_ssh_home

        write_ssh_home(server)
        os.environ.pop("SSH_AUTH_SOCK", None)
        src = work / "src"
        make_tree(src, args.runs, args.events_mb)
        day_ago = time.time() - 86400
        for folder, _, names in os.walk(src, topdown=False):
            for name in names:
                os.utime(os.path.join(folder, name), (day_ago, day_ago))
            os.utime(folder, (day_ago, day_ago))
        files = sum(len(names) for _, _, names in os.walk(src))
        known = work / "home" / ".ssh" / "known_hosts"
        ssh_cmd = (f"ssh -p {server.port} -i {server.client_key} -o IdentitiesOnly=yes -o UserKnownHostsFile={known}"
                   " -o StrictHostKeyChecking=yes -o BatchMode=yes -o Compression=no"
                   + (f" -c {args.rsync_cipher}" if args.rsync_cipher else ""))
        steps = ["first copy", "nothing changed, first pass (records the settled runs)",
                 "nothing changed (settled runs skipped)", "nothing changed, full (every file listed)"]
        steps = steps[:1] if args.first_only else steps
        load = os.getloadavg()[0]
        cipher = f" --rsync-cipher {args.rsync_cipher!r}" if args.rsync_cipher != "aes128-gcm@openssh.com" else ""
        lines = [f"## lt-sync at scale: {args.runs:,} ended runs, {files:,} files ({time.strftime('%Y-%m-%d')})", "",
                 "| where | step | lt-sync wall / CPU | rsync wall / CPU | ratio wall / CPU |"
                 " server CPU: lt-sync / rsync |",
                 "| --- | --- | --- | --- | --- | --- |"]
        remote = f"{server.user}@127.0.0.1:{server.port}:"
        for where in ("local -> local", "push to the test sshd", "pull from the test sshd"):
            key = where[:4]
            if args.where and key.replace("loca", "local") not in args.where:
                continue
            mine, theirs, state = work / f"lt-{key}", work / f"rsync-{key}", work / f"state-{key}"
            source = f"{remote}{src}" if key == "pull" else str(src)
            dest = f"{remote}{mine}" if key == "push" else str(mine)
            rsrc = f"{server.user}@127.0.0.1:{src}/" if key == "pull" else f"{src}/"
            rdest = f"{server.user}@127.0.0.1:{theirs}/" if key == "push" else f"{theirs}/"
            rsync = ["rsync", "-a", *([] if key == "loca" else ["-e", ssh_cmd]), rsrc, rdest]
            for i, step in enumerate(steps):
                opts = SyncOptions(state_path=state, full=i == 3)
                times: list[tuple[float, float, float, float]] = []
                for rep in range(args.repeat if args.first_only else 1):  # first copies again: best of N, alternated
                    if rep:
                        for folder in (mine, theirs):
                            shutil.rmtree(folder)
                        state.unlink()
                    sshd = None if key == "loca" or server.proc is None else server.proc.pid
                    times.append((*_timed(sync_once, source, dest, opts, check=i, sshd=sshd),
                                  *_timed(subprocess.check_call, rsync, check=None, sshd=sshd)))
                ours, ours_cpu = min(t[:2] for t in times)
                rs, rs_cpu = min(t[3:5] for t in times)
                lines.append(f"| {where} | {step} | {ours:.2f} s / {ours_cpu:.2f} s | {rs:.2f} s / {rs_cpu:.2f} s |"
                             f" {ours / rs:.2f}x / {ours_cpu / max(rs_cpu, 1e-3):.2f}x |"
                             f" {min(t[2] for t in times):.2f} s / {min(t[5] for t in times):.2f} s |")
                print(lines[-1], flush=True)
                if i == 0:
                    assert _same(src, mine), f"{where}: the mirror differs from the source"
                    time.sleep(1.1)
        load = f"load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
        lines += ["", f"Command: `python benchmarks/bench_sync.py --scale --runs {args.runs} --events-mb "
                  f"{args.events_mb}{f' --first-only --repeat {args.repeat}' if args.first_only else ''}"
                  f"{''.join(f' --where {w}' for w in args.where or [])}"
                  f"{cipher}`; "
                  f"{f'best of {args.repeat}, alternated' if args.first_only else 'one run each'}, rsync right after "
                  f"lt-sync on the same tree; {load}. CPU: this process and its children (lt-sync, its local tar) "
                  "or rsync's and ssh's on this side; server CPU: the sshd's sessions (sshd, the shells, find and tar, "
                  f"or rsync), least of the repetitions; rsync's ssh: {args.rsync_cipher or 'its default cipher'}, "
                  "no compression (lt-sync: asyncssh, aes128-gcm@openssh.com, no compression).", ""]
        text = "\n".join(lines)
        print(text)
        if args.out:
            Path(args.out).write_text(text)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
