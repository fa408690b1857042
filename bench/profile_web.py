"""Where one web process spends its time on the accept path: py-spy under a wrk load.

Starts `deployhook serve` (one web process, its deploy worker deploying over real
checkouts, as bench/lean.py), drives it with wrk at --concurrency, and samples the web
process with py-spy (`pip install py-spy`; root or ptrace rights). Writes a flame graph
(SVG, keep it out of the repository) and the raw stacks to --out, and prints the top
entries: own time (the function itself) and total time (with what it calls), as a share
of the samples taken while the process ran.

    python bench/profile_web.py [--seconds 15] [--concurrency 16] [--out /tmp/dh-profile]
                                [--base DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from common import run_wrk, wrk_script
from compare_webhook import make_repo, start_deployhook
from lean import REPOS, role


def top(raw: Path, n: int) -> str:
    """Own and total shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        k = int(count)
        frames = [f.split(" (", 1)[0] + _where(f) for f in stack.split(";")]
        samples += k
        own[frames[-1]] += k
        for frame in set(frames):
            total[frame] += k
    lines = [f"{samples} samples", "own time:"]
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in own.most_common(n)]
    lines.append("total time (with callees):")
    lines += [f"  {c / samples:6.1%}  {f}" for f, c in total.most_common(n * 2)]
    return "\n".join(lines)


def _where(frame: str) -> str:
    """(file.py) of a py-spy frame 'func (path/file.py:line)'."""
    if " (" not in frame:
        return ""
    path = frame.split(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else ""
    if not short:
        short = "/".join(parts[-2:])
    return f" ({short})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=Path("/tmp/dh-profile"))
    parser.add_argument("--base", type=Path, help="profile this checkout's code instead")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dh-profile-") as raw:
        tmp = Path(raw)
        made = {name: make_repo(tmp, name, commits=20) for name in REPOS}
        script = wrk_script(
            tmp / "push.lua", repos=REPOS, shas={n: shas for n, (_, shas) in made.items()}
        )
        env = {"PYTHONPATH": str(args.base.resolve())} if args.base else {}
        server = start_deployhook(
            tmp,
            sleep=1.0,
            processes=1,
            threads=None,
            repos={n: p for n, (p, _) in made.items()},
            env=env,
        )
        try:
            run_wrk(server.url + "/", script, connections=4, seconds=2, nonce="warmup")
            server.settle()
            pids = server.pids()
            [web] = [p for p in pids if role(p, set(pids)) == "web"]
            load = threading.Thread(
                target=run_wrk,
                args=(server.url + "/", script),
                kwargs={"connections": args.concurrency, "seconds": 2 * args.seconds + 4},
            )
            load.start()
            time.sleep(1)
            for fmt, name in (("raw", "web.txt"), ("flamegraph", "web.svg")):
                subprocess.run(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(web),
                        "--duration",
                        str(args.seconds),
                        "--gil",
                        "--rate",
                        "200",
                        "--format",
                        fmt,
                        "--output",
                        str(args.out / name),
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
            load.join()
            server.settle()
        finally:
            server.stop()
    print(f"flame graph: {args.out / 'web.svg'}; stacks: {args.out / 'web.txt'}")
    print(top(args.out / "web.txt", args.top))


if __name__ == "__main__":
    main()
