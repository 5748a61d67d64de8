"""Raw SQL baselines run by `pgbench` (PostgreSQL only): a script file, `--clients`
connections, its transactions/s, and latencies from a sample of its per-transaction log."""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import WorkloadResult, percentile

PGBENCH = "pgbench"
THREADS = 2  # -j: pgbench's own threads (the machine has 2 cores)
# latencies logged per run, about: enough for a p99, little disk and parsing
LOGGED_TRANSACTIONS = 50_000


@dataclass(slots=True)
class PgbenchRun:
    """What one `pgbench -T` run reported (`failed`: transactions that failed, plus one per
    aborted client; `errors`: the first lines of its stderr when it did not exit 0)."""

    transactions: int = 0
    failed: int = 0
    tps: float = 0.0
    latency_avg_ms: float | None = None
    latencies_ms: list[float] = field(default_factory=list)  # a sample
    cpu_seconds: float = 0.0  # pgbench's own CPU
    returncode: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.failed == 0 and self.transactions > 0


def available() -> str | None:
    """The pgbench executable, None when it is not installed."""
    found = shutil.which(PGBENCH)
    if found is None and Path("/usr/bin", PGBENCH).exists():
        found = str(Path("/usr/bin", PGBENCH))
    return found


def run(url: str, script: str, clients: int, seconds: float, *, expected_rate: float = 2_000.0,
        log_latencies: bool = True) -> PgbenchRun:
    """`pgbench -n -M prepared -c clients -j 2 -T seconds -f <script>` on `url`; latencies
    from a sample of about LOGGED_TRANSACTIONS transactions (`expected_rate`: transactions/s
    the sampling rate is sized for)."""
    exe = available()
    if exe is None:
        return PgbenchRun(returncode=127, errors=["pgbench not found"])
    duration = max(1, round(seconds))
    with tempfile.TemporaryDirectory(prefix="stockyard-pgbench-") as tmp:
        path = Path(tmp) / "script.sql"
        path.write_text(script)
        command = [exe, "-n", "-M", "prepared", "-c", str(clients),
                   "-j", str(min(THREADS, clients)), "-T", str(duration), "-f", str(path)]
        if log_latencies:
            rate = min(1.0, LOGGED_TRANSACTIONS / max(1.0, expected_rate * duration))
            command += ["-l", f"--log-prefix={tmp}/log", f"--sampling-rate={rate:.4f}"]
        before = _children_cpu()
        done = subprocess.run([*command, url], capture_output=True, text=True, check=False)
        out = parse(done.stdout)
        out.cpu_seconds = _children_cpu() - before
        out.returncode = done.returncode
        aborted = len(re.findall(r"client \d+ aborted", done.stderr))
        out.failed += aborted
        if done.returncode != 0 or aborted:
            out.errors = [line for line in done.stderr.splitlines() if line.strip()][:5]
        if log_latencies:
            out.latencies_ms = sorted(_logged(Path(tmp)))
    return out


def parse(stdout: str) -> PgbenchRun:
    """The figures of pgbench's summary."""
    out = PgbenchRun()
    if m := re.search(r"number of transactions actually processed: (\d+)", stdout):
        out.transactions = int(m.group(1))
    if m := re.search(r"number of failed transactions: (\d+)", stdout):
        out.failed = int(m.group(1))
    if m := re.search(r"latency average = ([\d.]+) ms", stdout):
        out.latency_avg_ms = float(m.group(1))
    if m := re.search(r"tps = ([\d.]+) \(without initial connection time\)", stdout):
        out.tps = float(m.group(1))
    return out


def _logged(directory: Path) -> list[float]:
    """Latencies (ms) of the logged transactions; failed ones have none."""
    out: list[float] = []
    for log in directory.glob("log.*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                out.append(int(fields[2]) / 1000.0)
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def result(name: str, measured: PgbenchRun, warmup: PgbenchRun | None = None
           ) -> WorkloadResult:
    """The run as a workload row: `orders/s` is pgbench's tps (its window is the run minus
    its connection time), p50/p99/max from the logged sample; a failed or aborted
    transaction, in the warm-up too, is a failure (`PGBENCH_FAILED`, `PGBENCH_EXIT_<n>`)."""
    lat = measured.latencies_ms
    seconds = measured.transactions / measured.tps if measured.tps > 0 else 0.0
    failures: dict[str, int] = {}
    for part in (warmup, measured):
        if part is None:
            continue
        if part.failed:
            failures["PGBENCH_FAILED"] = failures.get("PGBENCH_FAILED", 0) + part.failed
        if part.returncode != 0:
            key = f"PGBENCH_EXIT_{part.returncode}"
            failures[key] = failures.get(key, 0) + 1
    out = WorkloadResult(
        name=name, transport="pgbench", seconds=seconds, ok=measured.transactions,
        failures=failures, p50_ms=percentile(lat, 50), p99_ms=percentile(lat, 99),
        mean_ms=measured.latency_avg_ms, max_ms=lat[-1] if lat else None,
        client_cpu=measured.cpu_seconds / seconds if seconds > 0 else 0.0,
        ok_completed=measured.transactions, requests=measured.transactions)
    out.extra.update(pgbench_tps=measured.tps, latency_sample=len(lat),
                     pgbench_errors=(warmup.errors if warmup else []) + measured.errors)
    return out
