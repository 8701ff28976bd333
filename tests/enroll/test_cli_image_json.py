"""`--image` given as the aws CLI's JSON form is parsed like a request body: JSON nested too
deeply for the parser is InvalidParameterException (exit 2, JSON on stderr), not a
RecursionError traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from facelink.enroll.cli_base import image_value
from facelink.errors import InvalidParameterException

DEEP = '{"Bytes": ' + "[" * 50_000 + "]" * 50_000 + "}"


def test_deeply_nested_image_json_is_an_invalid_parameter():
    with pytest.raises(InvalidParameterException, match="--image"):
        image_value("image", DEEP, None)


def test_the_cli_answers_it_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "detect-faces", "--image", DEEP],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert json.loads(proc.stderr)["__type"] == "InvalidParameterException"
