"""Image fuzzer: real photos mutated (truncated, bytes flipped, headers lying about their size,
decompression and scan bombs, odd formats, broken EXIF, empty and huge files) and fed to
detect-faces, index-faces and search-faces-by-image (the Python API behind the CLI, with a real
SQLite + sqlite-vec collection) and to the door's folder camera source.

Every case must end in a documented typed error or a valid result: no other exception, no
hang (a per-call deadline), no memory blow-up (peak RSS growth per call), and the database's
``PRAGMA integrity_check`` is ok at the end. The targets run in a worker process, so a hang or
a crash in a decoder is reported as a finding instead of stopping the fuzzer.

    python tools/fuzz_images.py --seed 1 --cases 2000      # any number; CI runs 200
    python tools/fuzz_images.py --seed 1 --case 137 --keep var/fuzz   # re-make one case

Exit status 0 when there are no findings, 1 otherwise (failing cases are kept on disk).
"""

from __future__ import annotations

import argparse
import json
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fuzz_cases import make_case, photos

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED = {"InvalidImageFormatException", "ImageTooLargeException", "InvalidParameterException"}
API_TARGETS = ("detect-faces", "index-faces", "search-faces-by-image")


@dataclass
class Options:
    seed: int = 1
    cases: int = 200
    only: list[int] | None = None  # re-run these case indexes only
    faces_dir: Path = ROOT.parent / "shared" / "faces"
    models_dir: Path | None = None  # default: the settings' models dir
    work_dir: Path | None = None  # where cases and the database go (default: a temp dir)
    deadline_s: float = 60.0  # per call, generous: the machine may be loaded
    max_rss_growth_mib: float = 512.0  # a 40-megapixel photo legitimately takes ~120 MiB
    keep: bool = False


@dataclass
class Report:
    cases: int = 0
    outcomes: Counter = field(default_factory=Counter)  # (target, outcome) -> count
    findings: list[dict] = field(default_factory=list)
    max_rss_growth_mib: float = 0.0
    slowest_s: float = 0.0
    camera: dict = field(default_factory=dict)
    integrity: str = ""
    faces_indexed: int = 0
    seconds: float = 0.0
    work_dir: str = ""

    def summary(self) -> str:
        lines = [f"{self.cases} cases in {self.seconds:.0f} s; peak RSS growth per call "
                 f"{self.max_rss_growth_mib:.0f} MiB; slowest call {self.slowest_s:.1f} s; "
                 f"integrity_check {self.integrity!r}; {self.faces_indexed} faces indexed"]
        for target in (*API_TARGETS, "camera-folder"):
            got = {o: n for (t, o), n in sorted(self.outcomes.items()) if t == target}
            lines.append(f"  {target}: " + ", ".join(f"{o} {n}" for o, n in got.items()))
        lines.append(f"  camera-folder: {self.camera}")
        lines.append(f"{len(self.findings)} findings" + (f" (cases kept in {self.work_dir})" if self.findings else ""))
        lines += [f"  {json.dumps(f)[:600]}" for f in self.findings]
        return "\n".join(lines)


class Worker:
    """The targets in a child process (``--worker``), one JSON line per request and reply."""

    def __init__(self, opts: Options, db: Path, log: Path) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--db", str(db)]
        if opts.models_dir is not None:
            cmd += ["--models-dir", str(opts.models_dir)]
        self._log = open(log, "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1, cwd=ROOT)

    def call(self, request: dict, deadline_s: float) -> dict:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return {"outcome": "crash", "message": f"worker exited {self.proc.poll()}"}
        ready, _, _ = select.select([self.proc.stdout], [], [], deadline_s)
        if not ready:
            self.stop()
            return {"outcome": "hang", "message": f"no answer within {deadline_s:.0f} s"}
        line = self.proc.stdout.readline()
        if not line:
            return {"outcome": "crash", "message": f"worker exited with status {self.proc.wait()}"}
        return json.loads(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._log.close()


def _check(reply: dict, opts: Options) -> str | None:
    """Why this reply is a finding, or None when it is a valid result or a documented error."""
    outcome = reply["outcome"]
    if outcome == "error" and reply["type"] not in DOCUMENTED:
        return f"undocumented error {reply['type']}"
    if outcome not in ("ok", "error"):
        return outcome
    if reply.get("rss_growth_mib", 0.0) > opts.max_rss_growth_mib:
        return f"peak RSS grew {reply['rss_growth_mib']:.0f} MiB"
    return None


def run(opts: Options) -> Report:
    started = time.monotonic()
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="facelink-fuzz-"))
    cases_dir = work / "cases"
    cases_dir.mkdir(parents=True, exist_ok=True)
    report = Report(work_dir=str(work))
    photo_list = photos(opts.faces_dir)
    if not photo_list:
        raise SystemExit(f"no photos under {opts.faces_dir}")
    worker = Worker(opts, work / "fuzz.db", work / "worker.log")
    setup = worker.call({"op": "setup", "photo": str(photo_list[0])}, opts.deadline_s * 3)
    if setup["outcome"] != "ok":
        worker.stop()
        raise SystemExit(f"worker setup failed: {setup}")
    decoded: list[str] = []  # cases that decoded: the camera must deliver exactly these
    failing: set[str] = set()
    for index in opts.only if opts.only is not None else range(opts.cases):
        case = make_case(opts.seed, index, photo_list, opts.faces_dir)
        path = cases_dir / case.name
        path.write_bytes(case.data)
        report.cases += 1
        for target in API_TARGETS:
            reply = worker.call({"op": target, "path": str(path), "case": index}, opts.deadline_s)
            report.outcomes[(target, reply["outcome"] if reply["outcome"] != "error" else reply["type"])] += 1
            report.max_rss_growth_mib = max(report.max_rss_growth_mib, reply.get("rss_growth_mib", 0.0))
            report.slowest_s = max(report.slowest_s, reply.get("seconds", 0.0))
            problem = _check(reply, opts)
            if problem:
                failing.add(case.name)
                report.findings.append({"case": index, "kind": case.kind, "detail": case.detail, "photo": case.photo,
                                        "target": target, "problem": problem, "message": reply.get("message", ""),
                                        "traceback": reply.get("traceback", "")[-1500:]})
            if reply["outcome"] in ("hang", "crash"):
                worker = Worker(opts, work / "fuzz.db", work / "worker.log")
                worker.call({"op": "setup", "photo": str(photo_list[0])}, opts.deadline_s * 3)
            if target == "detect-faces" and reply["outcome"] == "ok":
                decoded.append(case.name)
    _camera_check(worker, opts, cases_dir, decoded, report)
    if not opts.keep:
        for p in cases_dir.iterdir():
            if p.name not in failing:
                p.unlink()
    final = worker.call({"op": "finish"}, opts.deadline_s)
    worker.stop()
    report.integrity = final.get("integrity", final.get("message", ""))
    report.faces_indexed = final.get("faces", 0)
    if report.integrity != "ok":
        report.findings.append({"target": "database", "problem": f"integrity_check: {report.integrity}"})
    report.seconds = time.monotonic() - started
    if not report.findings and not opts.keep and opts.work_dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def _camera_check(worker: Worker, opts: Options, cases_dir: Path, decoded: list[str], report: Report) -> None:
    """The door's folder source over every case: each image file is a frame if it decoded and a
    logged skip if it did not, each once, and the folder ends (the reader never starts over)."""
    from facelink.device.camera import IMAGE_SUFFIXES

    deadline_s = opts.deadline_s * 5
    reply = worker.call({"op": "camera-folder", "path": str(cases_dir), "deadline_s": deadline_s}, deadline_s + 30)
    report.outcomes[("camera-folder", reply["outcome"])] += 1
    report.max_rss_growth_mib = max(report.max_rss_growth_mib, reply.get("rss_growth_mib", 0.0))
    report.camera = {k: reply.get(k) for k in ("files", "frames", "skipped", "reopens", "ended")}
    problem = _check(reply, opts)
    if problem is None and reply["outcome"] == "ok":
        expected = sum(1 for name in decoded if Path(name).suffix.lower() in IMAGE_SUFFIXES)
        report.camera["expected"] = expected
        if (reply["frames"] != expected or reply["frames"] + reply["skipped"] != reply["files"]
                or reply["reopens"] or not reply["ended"]):
            problem = f"camera folder: expected {expected} frames and the rest skipped once, got {report.camera}"
    if problem:
        report.findings.append({"target": "camera-folder", "problem": problem, "message": reply.get("message", ""),
                                "traceback": reply.get("traceback", "")[-1500:]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=200)
    ap.add_argument("--case", type=int, action="append", dest="only", help="re-run only this case (repeatable)")
    ap.add_argument("--faces", type=Path, default=Options.faces_dir, help="folder of real photos")
    ap.add_argument("--models-dir", type=Path)
    ap.add_argument("--keep", type=Path, help="write every case and the database here and keep them")
    ap.add_argument("--deadline", type=float, default=Options.deadline_s, help="seconds per call")
    ap.add_argument("--max-rss-growth-mib", type=float, default=Options.max_rss_growth_mib)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        from fuzz_worker import serve

        return serve(args.db, args.models_dir)
    report = run(Options(seed=args.seed, cases=args.cases, only=args.only, faces_dir=args.faces,
                         models_dir=args.models_dir, work_dir=args.keep, deadline_s=args.deadline,
                         max_rss_growth_mib=args.max_rss_growth_mib, keep=args.keep is not None))
    print(report.summary())
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
