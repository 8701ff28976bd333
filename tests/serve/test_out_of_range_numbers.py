"""Numbers a JSON body can carry that no float or SQLite integer holds: a threshold written as a
400-digit integer, a NextToken whose position is past 2**63. Each is the caller's mistake, a 400
with Rekognition's exception, not an InternalServerError (500) logged as the server's own."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from .test_hardening import post

HUGE = int("9" * 400)  # json reads it as a Python int; float() of it raises OverflowError


@pytest.fixture(scope="module")
def coll(make_client):
    make_client().create_collection(CollectionId="numbers")
    return "numbers"


@pytest.mark.parametrize("target, params", [
    ("SearchFaces", {"FaceId": str(uuid.uuid4()), "FaceMatchThreshold": HUGE}),
    ("SearchUsers", {"FaceId": str(uuid.uuid4()), "UserMatchThreshold": HUGE}),
    ("AssociateFaces", {"UserId": "u", "FaceIds": [str(uuid.uuid4())], "UserMatchThreshold": -HUGE}),
])
def test_a_threshold_no_float_holds_is_invalid(endpoint, coll, target, params):
    url, _, tmp = endpoint
    status, _, payload = post(url, target, {"CollectionId": coll, **params})
    assert (status, payload.get("__type")) == (400, "InvalidParameterException"), payload
    assert "Threshold" in payload["message"]


@pytest.mark.parametrize("target, position", [("ListFaces", 10 ** 100), ("ListFaces", -(2 ** 63) - 1)])
def test_a_next_token_past_any_row_is_an_invalid_pagination_token(endpoint, coll, target, position):
    url, _, tmp = endpoint
    token = base64.urlsafe_b64encode(json.dumps({"after": position}).encode()).decode()
    status, _, payload = post(url, target, {"CollectionId": coll, "NextToken": token})
    assert (status, payload.get("__type")) == (400, "InvalidPaginationTokenException"), payload
    assert "database" not in payload["message"]
