"""The aws CLI v1 (awscli from PyPI), unchanged, against `facelink serve` with --endpoint-url."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .conftest import KEYS


@pytest.fixture(scope="module")
def aws(endpoint):
    pytest.importorskip("awscli")
    url, _, tmp = endpoint
    key = "AKIAFACELINKADMIN01"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": KEYS[key][0], "AWS_DEFAULT_REGION": "eu-west-1",
                "AWS_CONFIG_FILE": str(tmp / "no-config"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-creds"),
                "AWS_MAX_ATTEMPTS": "1"})

    def run(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "awscli", "rekognition", *args, "--endpoint-url", url,
                               "--output", "json"], env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else {}

    return run


def test_aws_cli(aws, faces_dir):
    out = aws("create-collection", "--collection-id", "cli-door")
    assert out["StatusCode"] == 200 and out["CollectionArn"].endswith("cli-door")
    out = aws("index-faces", "--collection-id", "cli-door", "--image-bytes",
              f"fileb://{faces_dir / 'people/obama/1.jpg'}", "--external-image-id", "badge-1")
    face_id = out["FaceRecords"][0]["Face"]["FaceId"]
    aws("index-faces", "--collection-id", "cli-door", "--image-bytes", f"fileb://{faces_dir / 'people/biden/1.jpg'}")
    out = aws("search-faces-by-image", "--collection-id", "cli-door", "--image-bytes",
              f"fileb://{faces_dir / 'people/obama/3.jpg'}", "--face-match-threshold", "95")
    assert [m["Face"]["FaceId"] for m in out["FaceMatches"]] == [face_id]
    assert out["FaceMatches"][0]["Face"]["ExternalImageId"] == "badge-1"
    out = aws("list-faces", "--collection-id", "cli-door", "--page-size", "1")  # the CLI follows NextToken
    assert len(out["Faces"]) == 2 and "NextToken" not in out
    out = aws("list-faces", "--collection-id", "cli-door", "--max-items", "1")
    assert len(out["Faces"]) == 1 and "NextToken" in out
