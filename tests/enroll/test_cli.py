"""The `facelink` command: Rekognition-shaped JSON out, typed JSON errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.fixture()
def run(tmp_path, models_dir):
    env = {**os.environ, "FACELINK_STORE__DATABASE": str(tmp_path / "cli.db"),
           "FACELINK_MODELS__MODELS_DIR": str(models_dir)}

    def call(*args: str) -> tuple[int, dict, str]:
        proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        out = json.loads(proc.stdout) if proc.stdout.strip() else {}
        return proc.returncode, out, proc.stderr

    return call


def test_cli_enroll_and_search(run, faces_dir):
    rc, out, _ = run("create-collection", "--collection-id", "door")
    assert rc == 0 and out["StatusCode"] == 200
    rc, out, _ = run("create-user", "--collection-id", "door", "--user-id", "obama")
    assert rc == 0 and out == {}
    rc, out, _ = run("index-faces", "--collection-id", "door", "--image", str(faces_dir / "people/obama/1.jpg"),
                     "--external-image-id", "badge-7", "--user-id", "obama")
    assert rc == 0 and out["FaceRecords"][0]["Face"]["UserId"] == "obama"
    face_id = out["FaceRecords"][0]["Face"]["FaceId"]
    rc, out, _ = run("search-users-by-image", "--collection-id", "door", "--image",
                     str(faces_dir / "people/obama/5.jpg"), "--user-match-threshold", "99")
    assert rc == 0 and out["UserMatches"][0]["User"]["UserId"] == "obama"
    rc, out, _ = run("disassociate-faces", "--collection-id", "door", "--user-id", "obama", "--face-ids", face_id)
    assert rc == 0 and out["DisassociatedFaces"] == [{"FaceId": face_id}]
    rc, out, _ = run("index-faces", "--collection-id", "door", "--image", str(faces_dir / "people/biden/1.jpg"))
    other = out["FaceRecords"][0]["Face"]["FaceId"]
    rc, out, _ = run("list-faces", "--collection-id", "door", "--face-ids", face_id, other, "--max-results", "5")
    assert rc == 0 and len(out["Faces"]) == 2
    rc, out, _ = run("delete-faces", "--collection-id", "door", "--face-ids", face_id, other)  # as the aws CLI
    assert rc == 0 and sorted(out["DeletedFaces"]) == sorted([face_id, other])


def test_cli_errors_are_typed(run, faces_dir, tmp_path):
    rc, _, err = run("list-faces", "--collection-id", "nope")
    assert rc == 4 and json.loads(err)["__type"] == "ResourceNotFoundException"
    rc, _, err = run("create-collection", "--collection-id", "bad id")
    assert rc == 2 and json.loads(err)["__type"] == "InvalidParameterException"
    (tmp_path / "fake.jpg").write_text("hello")
    rc, _, err = run("detect-faces", "--image", str(tmp_path / "fake.jpg"))
    assert rc == 3 and json.loads(err)["__type"] == "InvalidImageFormatException"


def test_cli_bad_config_is_one_clear_line(run, tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[matching]\nsimilarity_threshold = 140\n")
    rc, _, err = run("--config", str(cfg), "list-collections")
    assert rc == 8
    assert "matching.similarity_threshold" in json.loads(err)["Message"]


def test_cli_aws_forms(run, faces_dir, tmp_path):
    """--image-bytes fileb://, --image JSON, paging flags, tokens, list values, JSON usage errors."""
    import base64

    photo = faces_dir / "people/obama/1.jpg"
    assert run("create-collection", "--collection-id", "c")[0] == 0
    rc, out, err = run("index-faces", "--collection-id", "c", "--image-bytes", f"fileb://{photo}",
                       "--detection-attributes", "DEFAULT", "AGE_RANGE", "--max-faces", "200")
    assert rc == 0 and len(out["FaceRecords"]) == 1, err
    import cv2

    small = cv2.imread(str(faces_dir / "people/biden/1.jpg"))
    small = cv2.resize(small, None, fx=240 / small.shape[1], fy=240 / small.shape[1])
    b64 = base64.b64encode(cv2.imencode(".jpg", small)[1].tobytes()).decode()  # argv has a size limit
    rc, out, _ = run("index-faces", "--collection-id", "c", "--image", json.dumps({"Bytes": b64}))
    assert rc == 0 and len(out["FaceRecords"]) == 1
    rc, _, err = run("detect-faces", "--image", '{"S3Object": {"Bucket": "b", "Name": "k.jpg"}}')
    assert rc == 3 and json.loads(err)["__type"] == "InvalidS3ObjectException"
    run("index-faces", "--collection-id", "c", "--image", str(faces_dir / "people/rose_leslie/1.jpg"))
    rc, out, _ = run("list-faces", "--collection-id", "c", "--max-items", "2", "--page-size", "1")
    assert rc == 0 and len(out["Faces"]) == 2 and "NextToken" in out
    rc, rest, _ = run("list-faces", "--collection-id", "c", "--starting-token", out["NextToken"])
    assert rc == 0 and len(rest["Faces"]) == 1 and "NextToken" not in rest
    assert {f["FaceId"] for f in out["Faces"] + rest["Faces"]} == {
        f["FaceId"] for f in run("list-faces", "--collection-id", "c")[1]["Faces"]}
    assert run("list-collections", "--max-results", "0")[1]["CollectionIds"] == ["c"]
    assert run("create-user", "--collection-id", "c", "--user-id", "u", "--client-request-token", "t1")[0] == 0
    assert run("create-user", "--collection-id", "c", "--user-id", "u", "--client-request-token", "t1")[0] == 0
    rc, _, err = run("create-user", "--collection-id", "c", "--user-id", "u")
    assert rc == 6 and json.loads(err)["__type"] == "ConflictException"
    rc, out, _ = run("list-users", "--collection-id", "c")
    assert out["Users"] == [{"UserId": "u", "UserStatus": "CREATED"}]
    rc, out, _ = run("--facelink-extras", "list-users", "--collection-id", "c")
    assert out["Users"] == [{"UserId": "u", "UserStatus": "CREATED", "FaceCount": 0}]
    for args in (["index-faces", "--collection-id", "c", "--image", str(photo), "--quality-filter", "BEST"],
                 ["list-faces", "--collection-id", "c", "--max-results", "ten"],
                 ["compare-faces", "--source-image", str(photo), "--target-image", str(photo), "--quality-filter", "X"],
                 ["create-collection", "--collection-id", "nl\n"]):
        rc, _, err = run(*args)
        assert rc == 2 and json.loads(err)["__type"] == "InvalidParameterException", (args, err)
