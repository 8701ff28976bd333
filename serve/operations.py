"""Rekognition operation name -> the FaceLink Python API call that implements it (the same
functions the `facelink` CLI calls: no second implementation), with the request members the
service model defines, and whether the operation writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facelink.enroll import faces, images, search, users
from facelink.enroll.context import Context
from facelink.errors import InvalidParameterException

MAX_IMAGE_BYTES = 5 * 1024 * 1024  # Rekognition's limit for Image.Bytes sent in a request


@dataclass(frozen=True)
class Operation:
    members: frozenset[str]
    call: Callable[[Context, dict[str, Any]], dict[str, Any]]
    writes: bool = False
    collection: bool = True  # has a CollectionId (collection-limited keys are checked against it)
    lists_collections: bool = False  # ``call`` takes ``allowed``: the collections the key may see (None: all)


def image(p: dict[str, Any], name: str = "Image") -> bytes:
    from facelink.errors import ImageTooLargeException

    data = images.image_from_json(p.get(name), base64_bytes=True)
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageTooLargeException(f"{name}.Bytes is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    return data


def _no_tags(p: dict[str, Any]) -> None:
    if p.get("Tags"):
        raise InvalidParameterException("Tags are not supported by FaceLink")


def _create_collection(ctx: Context, p: dict[str, Any]) -> dict[str, Any]:
    _no_tags(p)
    return faces.create_collection(ctx, p.get("CollectionId"))


def _op(members: str, call: Callable[[Context, dict[str, Any]], dict[str, Any]], writes: bool = False,
        collection: bool = True) -> Operation:
    return Operation(frozenset(members.split()), call, writes, collection)


def _d(p: dict[str, Any], name: str, default: Any) -> Any:
    value = p.get(name)
    return default if value is None else value


OPERATIONS: dict[str, Operation] = {
    "CreateCollection": _op("CollectionId Tags", _create_collection, writes=True),
    "DescribeCollection": _op("CollectionId", lambda c, p: faces.describe_collection(c, p.get("CollectionId"))),
    "ListCollections": Operation(frozenset({"MaxResults", "NextToken"}), lambda c, p, allowed=None: faces.list_collections(
        c, p.get("MaxResults"), p.get("NextToken"), allowed), collection=False, lists_collections=True),
    "DeleteCollection": _op("CollectionId", lambda c, p: faces.delete_collection(c, p.get("CollectionId")),
                            writes=True),
    "IndexFaces": _op("CollectionId Image ExternalImageId DetectionAttributes MaxFaces QualityFilter",
                      lambda c, p: faces.index_faces(
                          c, p.get("CollectionId"), image(p), p.get("ExternalImageId"), p.get("MaxFaces"),
                          _d(p, "QualityFilter", "AUTO"), p.get("DetectionAttributes")), writes=True),
    "ListFaces": _op("CollectionId NextToken MaxResults UserId FaceIds", lambda c, p: faces.list_faces(
        c, p.get("CollectionId"), p.get("MaxResults"), p.get("NextToken"), p.get("UserId"), p.get("FaceIds"))),
    "DeleteFaces": _op("CollectionId FaceIds", lambda c, p: faces.delete_faces(
        c, p.get("CollectionId"), p.get("FaceIds")), writes=True),
    "SearchFaces": _op("CollectionId FaceId MaxFaces FaceMatchThreshold", lambda c, p: search.search_faces(
        c, p.get("CollectionId"), p.get("FaceId"), _d(p, "FaceMatchThreshold", 80.0), _d(p, "MaxFaces", 4096))),
    "SearchFacesByImage": _op("CollectionId Image MaxFaces FaceMatchThreshold QualityFilter",
                              lambda c, p: search.search_faces_by_image(
                                  c, p.get("CollectionId"), image(p), _d(p, "FaceMatchThreshold", 80.0),
                                  _d(p, "MaxFaces", 4096), _d(p, "QualityFilter", "NONE"))),
    "CompareFaces": _op("SourceImage TargetImage SimilarityThreshold QualityFilter",
                        lambda c, p: images.compare_faces(
                            c.engine, image(p, "SourceImage"), image(p, "TargetImage"),
                            _d(p, "SimilarityThreshold", 80.0), _d(p, "QualityFilter", "NONE")), collection=False),
    "DetectFaces": _op("Image Attributes", lambda c, p: images.detect_faces(c.engine, image(p), p.get("Attributes")),
                       collection=False),
    "CreateUser": _op("CollectionId UserId ClientRequestToken", lambda c, p: users.create_user(
        c, p.get("CollectionId"), p.get("UserId"), p.get("ClientRequestToken")), writes=True),
    "DeleteUser": _op("CollectionId UserId ClientRequestToken", lambda c, p: users.delete_user(
        c, p.get("CollectionId"), p.get("UserId"), p.get("ClientRequestToken")), writes=True),
    "ListUsers": _op("CollectionId MaxResults NextToken", lambda c, p: users.list_users(
        c, p.get("CollectionId"), p.get("MaxResults"), p.get("NextToken"))),
    "AssociateFaces": _op("CollectionId UserId FaceIds UserMatchThreshold ClientRequestToken",
                          lambda c, p: users.associate_faces(
                              c, p.get("CollectionId"), p.get("UserId"), p.get("FaceIds"),
                              _d(p, "UserMatchThreshold", 75.0), p.get("ClientRequestToken")), writes=True),
    "DisassociateFaces": _op("CollectionId UserId ClientRequestToken FaceIds",
                             lambda c, p: users.disassociate_faces(
                                 c, p.get("CollectionId"), p.get("UserId"), p.get("FaceIds"),
                                 p.get("ClientRequestToken")), writes=True),
    "SearchUsers": _op("CollectionId UserId FaceId UserMatchThreshold MaxUsers", lambda c, p: users.search_users(
        c, p.get("CollectionId"), p.get("UserId"), p.get("FaceId"), _d(p, "UserMatchThreshold", 80.0),
        _d(p, "MaxUsers", 500))),
    "SearchUsersByImage": _op("CollectionId Image UserMatchThreshold MaxUsers QualityFilter",
                              lambda c, p: users.search_users_by_image(
                                  c, p.get("CollectionId"), image(p), _d(p, "UserMatchThreshold", 80.0),
                                  _d(p, "MaxUsers", 500), _d(p, "QualityFilter", "NONE"))),
}
