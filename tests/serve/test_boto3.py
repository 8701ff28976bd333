"""boto3, unchanged, against `facelink serve`: every implemented operation on real photos, the
paginators, the modelled exception classes, access control; and every raw response is checked
against botocore's output shapes (the conformance test)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from botocore.exceptions import ClientError

from .conftest import photo
from .shapes import shape_errors


def img(faces_dir, rel: str) -> dict:
    return {"Bytes": photo(faces_dir, rel)}


def test_every_operation(rek, recorded, faces_dir):
    assert rek.create_collection(CollectionId="lobby")["StatusCode"] == 200
    rek.create_collection(CollectionId="garage")
    with pytest.raises(rek.exceptions.ResourceAlreadyExistsException):
        rek.create_collection(CollectionId="lobby")
    pages = rek.get_paginator("list_collections").paginate(PaginationConfig={"PageSize": 1})
    assert [c for p in pages for c in p["CollectionIds"]] == ["garage", "lobby"]
    rek.create_user(CollectionId="lobby", UserId="obama")  # boto3 adds a ClientRequestToken
    rek.create_user(CollectionId="lobby", UserId="biden")
    with pytest.raises(rek.exceptions.ConflictException):
        rek.create_user(CollectionId="lobby", UserId="obama")
    ids = {}
    for rel, ext in [("people/obama/1.jpg", "o1"), ("people/obama/2.jpg", "o2"), ("people/biden/1.jpg", "b1")]:
        out = rek.index_faces(CollectionId="lobby", Image=img(faces_dir, rel), ExternalImageId=ext,
                              DetectionAttributes=["ALL"], MaxFaces=1, QualityFilter="AUTO")
        assert len(out["FaceRecords"]) == 1 and out["FaceModelVersion"]
        ids[ext] = out["FaceRecords"][0]["Face"]["FaceId"]
    group = rek.index_faces(CollectionId="lobby", Image=img(faces_dir, "multi/five_people.jpg"))
    assert len(group["FaceRecords"]) >= 4
    pages = rek.get_paginator("list_faces").paginate(CollectionId="lobby", PaginationConfig={"PageSize": 2})
    listed = [f["FaceId"] for p in pages for f in p["Faces"]]
    assert len(listed) == 3 + len(group["FaceRecords"]) == len(set(listed))
    out = rek.associate_faces(CollectionId="lobby", UserId="obama", FaceIds=[ids["o1"], ids["o2"]])
    assert len(out["AssociatedFaces"]) == 2 and out["UserStatus"] == "ACTIVE"
    rek.associate_faces(CollectionId="lobby", UserId="biden", FaceIds=[ids["b1"]])
    rek.create_user(CollectionId="lobby", UserId="nobody")
    users = [u for p in rek.get_paginator("list_users").paginate(CollectionId="lobby",
                                                                  PaginationConfig={"PageSize": 1}) for u in p["Users"]]
    assert [(u["UserId"], u["UserStatus"]) for u in users] == [("biden", "ACTIVE"), ("nobody", "CREATED"),
                                                               ("obama", "ACTIVE")]
    out = rek.search_faces(CollectionId="lobby", FaceId=ids["o1"], FaceMatchThreshold=90)
    assert out["FaceMatches"][0]["Face"]["FaceId"] == ids["o2"]
    out = rek.search_faces_by_image(CollectionId="lobby", Image=img(faces_dir, "people/obama/4.jpg"),
                                    FaceMatchThreshold=95, MaxFaces=2)
    assert {m["Face"]["FaceId"] for m in out["FaceMatches"]} == {ids["o1"], ids["o2"]}
    out = rek.search_users(CollectionId="lobby", FaceId=ids["b1"], UserMatchThreshold=0)
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == ["obama"]  # the face's own user is left out
    out = rek.search_users(CollectionId="lobby", UserId="biden", UserMatchThreshold=0)
    assert "obama" in [m["User"]["UserId"] for m in out["UserMatches"]]
    out = rek.search_users_by_image(CollectionId="lobby", Image=img(faces_dir, "people/obama/5.jpg"),
                                    UserMatchThreshold=95, QualityFilter="LOW")
    assert [m["User"]["UserId"] for m in out["UserMatches"]] == ["obama"]
    out = rek.compare_faces(SourceImage=img(faces_dir, "people/obama/1.jpg"),
                            TargetImage=img(faces_dir, "multi/obama_and_biden.jpg"), SimilarityThreshold=90)
    assert len(out["FaceMatches"]) == 1 and len(out["UnmatchedFaces"]) >= 1
    out = rek.detect_faces(Image=img(faces_dir, "multi/six_people.jpg"), Attributes=["DEFAULT", "SMILE"])
    assert len(out["FaceDetails"]) == 6
    out = rek.disassociate_faces(CollectionId="lobby", UserId="biden", FaceIds=[ids["b1"]])
    assert out["DisassociatedFaces"] == [{"FaceId": ids["b1"]}] and out["UserStatus"] == "CREATED"
    out = rek.delete_faces(CollectionId="lobby", FaceIds=[ids["b1"], ids["o1"]])
    assert out["DeletedFaces"] == [ids["b1"]]
    assert out["UnsuccessfulFaceDeletions"][0]["Reasons"] == ["ASSOCIATED_TO_AN_EXISTING_USER"]
    rek.delete_user(CollectionId="lobby", UserId="nobody")
    d = rek.describe_collection(CollectionId="lobby")
    assert d["FaceCount"] == 2 + len(group["FaceRecords"]) and d["UserCount"] == 2
    assert d["CreationTimestamp"].year >= 2024  # a datetime: the wire had epoch seconds
    assert rek.delete_collection(CollectionId="garage")["StatusCode"] == 200


def test_modelled_exceptions(rek, faces_dir):
    with pytest.raises(rek.exceptions.ResourceNotFoundException):
        rek.describe_collection(CollectionId="nope")
    rek.create_collection(CollectionId="errors")
    with pytest.raises(rek.exceptions.InvalidParameterException):
        blank = cv2.imencode(".png", np.full((240, 320, 3), 127, np.uint8))[1].tobytes()
        rek.compare_faces(SourceImage=img(faces_dir, "people/obama/1.jpg"), TargetImage={"Bytes": blank})
    bmp = cv2.imencode(".bmp", cv2.imread(str(faces_dir / "people/obama/1.jpg")))[1].tobytes()
    with pytest.raises(rek.exceptions.InvalidImageFormatException):
        rek.index_faces(CollectionId="errors", Image={"Bytes": bmp[:5_000_000]})
    with pytest.raises(rek.exceptions.InvalidS3ObjectException):
        rek.detect_faces(Image={"S3Object": {"Bucket": "badges", "Name": "x.jpg"}})
    with pytest.raises(rek.exceptions.ImageTooLargeException):  # Rekognition's 5 MB for Image.Bytes
        rek.detect_faces(Image={"Bytes": b"\xff\xd8\xff" + b"\0" * (5 * 1024 * 1024)})
    with pytest.raises(rek.exceptions.InvalidPaginationTokenException):
        rek.list_faces(CollectionId="errors", NextToken="garbage")
    with pytest.raises(rek.exceptions.IdempotentParameterMismatchException):
        rek.create_user(CollectionId="errors", UserId="a", ClientRequestToken="tok-1")
        rek.create_user(CollectionId="errors", UserId="b", ClientRequestToken="tok-1")


def test_keys_and_signatures(make_client, rek):
    rek.create_collection(CollectionId="keys-other")
    for kwargs, code in [({"secret": "wrong-secret-0123456789"}, "InvalidSignatureException"),
                         ({"key": "AKIAUNKNOWNKEY000001", "secret": "whatever-0123456789"},
                          "UnrecognizedClientException")]:
        with pytest.raises(ClientError) as exc:
            make_client(**kwargs).list_collections()
        assert exc.value.response["Error"]["Code"] == code
    reader = make_client("AKIAFACELINKREADER1")
    assert "keys-other" in reader.list_collections()["CollectionIds"]
    with pytest.raises(reader.exceptions.AccessDeniedException):
        reader.create_collection(CollectionId="reader-made")
    lobby_only = make_client("AKIAFACELINKLOBBY01")
    assert lobby_only.list_collections()["CollectionIds"] == ["lobby"]
    with pytest.raises(lobby_only.exceptions.AccessDeniedException):
        lobby_only.list_faces(CollectionId="keys-other")
    slow = make_client("AKIAFACELINKSLOW001")
    slow.list_collections()
    with pytest.raises(ClientError) as exc:  # the key's one request per 10,000 s is spent
        slow.list_collections()
    assert exc.value.response["Error"]["Code"] == "ThrottlingException"


def test_unsigned_request_refused(endpoint):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(endpoint[0] + "/", data=b"{}", method="POST", headers={
        "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "RekognitionService.ListCollections"})
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=60)
    assert exc.value.code == 403 and b"MissingAuthenticationTokenException" in exc.value.read()


def test_every_response_conforms_to_the_service_model(rek, recorded):
    """Runs last in this module: the responses recorded above, against botocore's output shapes."""
    from facelink.serve.operations import OPERATIONS

    model = rek.meta.service_model
    ok = [(op, body) for op, status, body in recorded if status == 200]
    assert {op for op, _ in ok} == set(OPERATIONS), "every implemented operation was exercised"
    errors = [f"{op}: {e}" for op, body in ok for e in shape_errors(model.operation_model(op).output_shape, body)]
    assert errors == []
    for op, status, body in recorded:
        if status != 200:
            assert set(body) == {"__type", "message"} and body["__type"] in {
                s.name for s in model.operation_model(op).error_shapes}, (op, body)
