"""A store's LMDB map: the same writes into stores opened with each map size, each in a fresh
process, the sizes alternated. It compared the maps that grew by doubling (the write batch
replayed: run it at commit 1b2bccd) with the one large sparse map semdb now opens
(docs/notes/STORE-FORMAT.md); today a map smaller than the data fails with "is full".

    python bench/map_size.py [--n 20000] [--rounds 3] [--sizes 1048576,67108864,1099511627776]

Writes, as an ingest does: n items in batches of 32, each with a staged 512-d embedding; then
a codec and a 32-byte code for every item (batches of 1024, staging rows removed); then
n/4 more items with codes. Reported per map size: seconds, data.mdb size (ls -l) and blocks
on disk (du), the map at the end, the process's peak address space (VmPeak) and peak
resident memory (VmHWM); medians of wall and CPU seconds (CPU: less disturbed by other jobs).
The last output line is JSON.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(path: str, n: int, map_size: int) -> dict:
    import numpy as np

    from semdb.store import Item, Store

    rng = np.random.default_rng(0)

    def item(i: int) -> Item:
        path = f"/photos/{i // 500}/IMG_{i:06d}.jpg"
        return Item.new(path, size=1000 + i, mtime_ns=i, hash=f"h{i}", width=4, height=3)

    t, cpu = time.perf_counter(), time.process_time()
    with Store(path, create=True, map_size=map_size) as s:
        for b in range(0, n, 32):
            with s.write() as w:
                for i in range(b, min(n, b + 32)):
                    e = rng.standard_normal(512).astype(np.float32)
                    w.add_item(item(i), embedding=e / np.linalg.norm(e))
        ids = [i for ids, _ in s.iter_staging() for i in ids.tolist()]
        with s.write() as w:
            w.set_codec(b"c" * 200_000, "codec-1", 32)
        for b in range(0, len(ids), 1024):
            chunk = ids[b : b + 1024]
            with s.write() as w:
                w.set_codes(chunk, rng.integers(0, 256, (len(chunk), 32), dtype=np.uint8))
        for b in range(n, n + n // 4, 32):
            with s.write() as w:
                for i in range(b, min(n + n // 4, b + 32)):
                    w.add_item(item(i), code=rng.integers(0, 256, 32, dtype=np.uint8).tobytes())
        seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
        info = s.info()
        assert s.count() == n + n // 4 and s.staging_count() == 0
    st = os.stat(Path(path) / "data.mdb")
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {
        "map_size_start": map_size,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "ls_bytes": st.st_size,
        "du_bytes": st.st_blocks * 512,
        "map_size_end": info["map_size"],
        "vm_peak_kb": int(status["VmPeak"].split()[0]),
        "rss_peak_kb": int(status["VmHWM"].split()[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default=f"{1 << 20},{64 << 20},{1 << 40}")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child[0], int(a.child[1]), int(a.child[2]))))
        return
    sizes = [int(x) for x in a.sizes.split(",")]
    runs: dict[int, list] = {m: [] for m in sizes}
    for r in range(a.rounds):
        for m in sizes:
            with tempfile.TemporaryDirectory() as d:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", f"{d}/s", str(a.n), str(m)],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )  # fmt: skip
                res = json.loads(out.stdout.splitlines()[-1])
                runs[m].append(res)
                print(f"round {r} map {m >> 20} MiB: {res}", flush=True)
    summary = []
    for m in sizes:
        rs = runs[m]
        secs = sorted(x["seconds"] for x in rs)
        cpus = sorted(x["cpu_seconds"] for x in rs)
        summary.append({**rs[-1], "seconds_median": secs[len(secs) // 2], "seconds_all": secs,
                        "cpu_median": cpus[len(cpus) // 2], "cpu_all": cpus})  # fmt: skip
    for s in summary:
        print(
            f"map {s['map_size_start'] >> 20:>8} MiB -> {s['map_size_end'] >> 20:>8} MiB: "
            f"wall {s['seconds_median']:6.2f} s {s['seconds_all']}, CPU {s['cpu_median']:6.2f} s {s['cpu_all']}, "
            f"ls {s['ls_bytes'] / 1e6:.1f} MB, du {s['du_bytes'] / 1e6:.1f} MB, "
            f"VmPeak {s['vm_peak_kb'] / 1e6:.1f} GB, RSS peak {s['rss_peak_kb'] / 1e3:.0f} MB"
        )
    print(json.dumps({"n": a.n, "runs": summary}))


if __name__ == "__main__":
    main()
