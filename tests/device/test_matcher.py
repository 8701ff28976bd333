"""The door's index is all-or-nothing: a failed read of the collection leaves nobody grantable
until a full reload succeeds, and a revoked badge never survives a failure. Its int8 scan
returns the exact float32 top-1 on real faces and follows every change the float32 rows do."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from facelink.device import scan
from facelink.device.gallery import Gallery
from facelink.device.matcher import IndexUnusable, UserIndex
from facelink.enroll import faces, users
from facelink.enroll.store import Store
from facelink.errors import StoreError


def _probe(engine, faces_dir, name: str):
    import cv2

    return engine.analyze(cv2.imread(str(faces_dir / "people" / name)), max_faces=1)[0].embedding


@pytest.fixture()
def enrolled(ctx, faces_dir):
    faces.create_collection(ctx, "door")
    for name in ("obama", "biden"):
        users.create_user(ctx, "door", name)
        faces.index_faces(ctx, "door", faces_dir / "people" / name / "1.jpg", f"{name}-badge", user_id=name)
    return ctx


def _faces_reads(monkeypatch, marker: str = " FROM faces ",
                 fails: Callable[[int], bool] = lambda k: k == 1) -> list[int]:
    """Numbers the reads whose SQL holds ``marker`` (default: any read of the faces table), at
    the store boundary on a real database; those that ``fails`` picks (default: the next one)
    fail as a disk would."""
    real, reads = Store.query, []

    def counted(self, sql, params=()):
        if marker in sql:
            reads.append(len(reads) + 1)
            if fails(reads[-1]):
                raise StoreError("database read failed: disk I/O error (injected)")
        return real(self, sql, params)

    monkeypatch.setattr(Store, "query", counted)
    return reads


@pytest.mark.parametrize("quantised_from", [0, 10**9], ids=["int8-scan", "float32-scan"])
def test_revoked_user_is_never_matched_after_a_failed_read(enrolled, engine, faces_dir, monkeypatch,
                                                            quantised_from):
    index = UserIndex(enrolled.store, "door", engine.model_version, quantised_from=quantised_from)
    index.load()
    biden, obama = _probe(engine, faces_dir, "biden/2.jpg"), _probe(engine, faces_dir, "obama/2.jpg")
    assert index.best(biden).user_id == "biden"
    users.delete_user(enrolled, "door", "biden")
    failed = _faces_reads(monkeypatch)
    with pytest.raises(StoreError):
        index.refresh(0)
    assert failed
    with pytest.raises(StoreError):  # nobody is grantable while the index is unusable
        index.best(obama)
    assert not index.usable and index.error
    assert index.refresh(0)  # a normal refresh: the full reload succeeds
    assert index.usable and index.error is None
    match = index.best(biden)
    assert match is None or match.user_id != "biden"
    assert index.best(obama).user_id == "obama"


def test_failed_full_reload_keeps_the_index_unusable(enrolled, engine, faces_dir, monkeypatch):
    index = UserIndex(enrolled.store, "door", engine.model_version)
    index.load()
    position = index.position
    faces.index_faces(enrolled, "door", faces_dir / "people/obama/2.jpg", "obama-2", user_id="obama")
    _faces_reads(monkeypatch)
    with pytest.raises(StoreError):
        index.refresh(0)
    assert index.position == position  # the position did not move past what was not applied
    failed_again = _faces_reads(monkeypatch, fails=lambda k: True)
    with pytest.raises(StoreError):
        index.refresh(0)  # the full reload fails too: still unusable
    assert failed_again and not index.usable and len(index) == 0
    monkeypatch.undo()
    assert index.refresh(0) and index.usable and index.position > position
    assert index.best(_probe(engine, faces_dir, "obama/3.jpg")).user_id == "obama"


@pytest.fixture(scope="module")
def people(engine, faces_dir) -> tuple[np.ndarray, list[str]]:
    """Every photo of ../shared/faces/people embedded by the real engine, with its person."""
    import cv2

    vectors, names = [], []
    for photo in sorted((faces_dir / "people").glob("*/*")):
        found = engine.analyze(cv2.imread(str(photo)), max_faces=1)
        if found:
            vectors.append(found[0].embedding)
            names.append(photo.parent.name)
    return np.stack(vectors).astype(np.float32), names


def test_int8_scan_returns_the_exact_top1_on_real_faces(people):
    """Real embeddings among 20,000 hard distractors (real faces moved by noise, so many lie close
    to the queries): the int8 scan with its re-rank returns the exact float32 top-1 for every
    real photo, and every row's int8 score is within the proven bound of its exact score."""
    real, _ = people
    rng = np.random.default_rng(7)
    near = real[rng.integers(0, len(real), 20_000)] + rng.normal(0, 0.06, (20_000, real.shape[1]))
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    matrix = np.concatenate([near[:10_000], real, near[10_000:]])
    gallery = Gallery.of(np.arange(1, len(matrix) + 1), [f"f{i}" for i in range(len(matrix))],
                         [None] * len(matrix), ["u"] * len(matrix), matrix)
    assert gallery.residual <= 0.0446 and gallery.q8_norm <= 1 + 0.0446
    reranked = []
    for query in list(real) + list(near[:50]):
        exact, exact_cosine = scan.exact_top1(matrix, query)
        i, cosine, candidates = scan.certified_top1(matrix, gallery.q8, gallery.residual,
                                                    gallery.q8_norm, query)
        assert (i, cosine) == (exact, exact_cosine)  # the same row and the same bits
        xq, scale, query_residual = scan.quantise_query(query)
        approx, _ = scan.approx_scores(gallery.q8, xq)
        bound = scan.score_bound(gallery.residual, gallery.q8_norm, query, query_residual)
        assert np.max(np.abs(approx / (scan.SCALE * scale) - matrix @ query)) <= bound + scan.EPS
        reranked.append(candidates)
    assert np.median(reranked) < 100  # the re-rank is a band of rows, not the gallery


def test_a_row_altered_in_the_database_makes_the_index_unusable(enrolled, engine, faces_dir):
    """The store refuses rows that are not unit vectors, so one here was written into the file
    by something else: the door loads nothing from it (nobody granted, health says why)."""
    index = UserIndex(enrolled.store, "door", engine.model_version)
    biden = _probe(engine, faces_dir, "biden/2.jpg")
    index.load()
    assert index.best(biden).user_id == "biden"
    (emb,), = enrolled.store.query("SELECT embedding FROM faces WHERE user_id = 'obama' LIMIT 1")
    longer = (np.frombuffer(emb, np.float32) * np.float32(5)).tobytes()
    with enrolled.store.transaction() as c:
        c.execute("UPDATE faces SET embedding = ? WHERE user_id = 'obama'", (longer,))
    with pytest.raises(StoreError, match="not unit embeddings"):
        index.load()
    assert not index.usable and "not unit embeddings" in index.error
    with pytest.raises(IndexUnusable):
        index.best(biden)


def test_the_bound_holds_for_each_querys_worst_row(people):
    """For every real query, the row of +-1 values along the query's own rounding error (the row
    the query-residual term of R exists for; exact in int8, so its own residual is 0): its int8
    score lies within the bound the scan uses, taken from the copy's measured norm."""
    real, _ = people
    for query in real:
        xq, scale, query_residual = scan.quantise_query(query)
        worst = np.where(query - xq / scale >= 0, 1.0, -1.0).astype(np.float32)[None, :]
        q8, residual, norm = scan.quantise(worst)
        approx, _ = scan.approx_scores(q8, xq)
        error = abs(approx[0] / (scan.SCALE * scale) - float(worst[0] @ query))
        assert error <= scan.score_bound(residual, norm, query, query_residual) + scan.EPS


def _kernel_scan(rows: np.ndarray, query: np.ndarray, band: int, threads: int = 1):
    n = len(rows)
    idx, scores = np.full(n, -1, np.int32), np.zeros(n, np.int32)
    best, count = scan.KERNEL.scan(rows, query, band, idx, scores, threads)
    return best, idx[:count], scores[:count]


def test_int8_kernel_is_exact_integer_arithmetic():
    """The compiled kernel (AVX2 / NEON / plain C) is the int32 dot product, bit for bit, at every
    length (the 8-row blocks and the tail), at the value limits, and split across threads; with
    a band it returns exactly the rows scoring within it of the best, in row order."""
    assert scan.KERNEL is not None, "device/_int8dot.c was not built: `pip install -e .` needs a C compiler"
    rng = np.random.default_rng(3)
    for n in (1, 7, 8, 9, 1_000, 40_003):
        rows = rng.integers(-128, 128, (n, 128), dtype=np.int8)  # rows may hold -128
        rows[0] = 127
        rows[-1] = -128
        query = np.full(128, -127, dtype=np.int8) if n == 1 else rng.integers(-127, 128, 128, dtype=np.int8)
        expected = rows.astype(np.int64) @ query.astype(np.int64)
        for threads in (1, 2, 3, 8):
            for band in (0, 2_000, 20_000, scan.ALL_ROWS):
                best, idx, scores = _kernel_scan(rows, query, band, threads)
                kept = np.flatnonzero(expected >= expected.max() - band)
                assert best == expected.max() and np.array_equal(idx, kept)
                assert np.array_equal(scores, expected[kept])
        scores, best = scan.approx_scores(rows, query, 2)
        assert scores.dtype == np.int32 and np.array_equal(scores, expected) and best == expected.max()
    for dim in (1, 31, 100, 65_536):  # other widths (plain C below 32s), up to the limit: exact
        rows = rng.integers(-128, 128, (9, dim), dtype=np.int8)
        query = rng.integers(-127, 128, dim, dtype=np.int8)
        best, idx, scores = _kernel_scan(rows, query, scan.ALL_ROWS)
        assert best == (rows.astype(np.int64) @ query).max()
        assert np.array_equal(scores, rows.astype(np.int64) @ query) and np.array_equal(idx, np.arange(9))


def test_int8_kernel_band_keeps_every_row_when_each_is_a_new_best():
    """The band is taken during the pass against a running best: rows in ascending score order
    (each one a new best when it is read) and rows all equal (every one within any band) are the
    worst cases: the result is still exactly the rows within the band of the final best."""
    n = 10_000
    ascending = (np.arange(128)[None, :] < (np.arange(n) * 128 // n)[:, None]).astype(np.int8)
    query = np.ones(128, np.int8)
    expected = ascending.astype(np.int64) @ query
    for band in (0, 1, 5, scan.ALL_ROWS):
        for threads in (1, 2):
            best, idx, _ = _kernel_scan(ascending, query, band, threads)
            assert best == 127 and np.array_equal(idx, np.flatnonzero(expected >= 127 - band))
    same = np.ones((n, 128), np.int8)
    best, idx, scores = _kernel_scan(same, query, 0, 2)
    assert best == 128 and np.array_equal(idx, np.arange(n)) and (scores == 128).all()


def test_int8_kernel_refuses_bad_arguments():
    rng = np.random.default_rng(4)
    rows = rng.integers(-128, 128, (40, 128), dtype=np.int8)
    query = rng.integers(-127, 128, 128, dtype=np.int8)
    idx, scores = np.empty(40, np.int32), np.empty(40, np.int32)
    both = np.empty(80, np.int32)
    for bad in ((rows, query.astype(np.float32), 0, idx, scores),  # a float query
                (rows[:, :64].copy(), query, 0, idx, scores),  # another width
                (rows, query, 0, idx.astype(np.int64), scores),  # another index type
                (rows, query, 0, idx[:39], scores),  # too short for every row
                (rows[:0], query, 0, idx[:0], scores[:0]),  # no row: no best
                (rows, query, -1, idx, scores),  # a negative band
                (rows, query, 0, idx, scores, 0),  # no thread
                (rows, query, 0, idx, scores, 9),  # more threads than the kernel starts
                (rows, np.full(128, -128, np.int8), 0, idx, scores),  # -128: vpsignb keeps it
                (rows, query[None, :], 0, idx, scores),  # a query of another shape
                (rows, query, 0, both[:40], both[20:60]),  # output buffers that overlap
                (rows, query, 0, rows.view(np.int32)[:40].reshape(-1)[:40], scores),  # over the rows
                (np.zeros((2, 65_537), np.int8), np.zeros(65_537, np.int8), 0, idx[:2].copy(),
                 scores[:2].copy())):  # a width whose int32 sums could overflow
        with pytest.raises(ValueError):
            scan.KERNEL.scan(*bad)
    assert scan.KERNEL.scan(rows, query, 0, idx, scores)[1] >= 1  # the same call, well formed
    wide = rng.integers(-128, 128, (40, 256), dtype=np.int8)
    scratch = np.zeros(40, np.int32)
    for bad in ((wide[:, ::2], query, 0, idx, scores),  # rows not contiguous
                (rows, scratch[8:].view(np.int8), 0, scratch, scores)):  # the query inside idx
        with pytest.raises((ValueError, BufferError)):
            scan.KERNEL.scan(*bad)


def test_int8_kernel_band_wider_than_any_score_keeps_every_row():
    """A band past 2^33 is clamped (best - band cannot overflow): all rows are kept even when
    every score is negative."""
    rows = np.full((9, 128), -1, np.int8)
    query = np.ones(128, np.int8)
    for band in (scan.ALL_ROWS, 2**62, 2**63 - 1):
        best, idx, scores = _kernel_scan(rows, query, band, 2)
        assert best == -128 and np.array_equal(idx, np.arange(9)) and (scores == -128).all()


def test_one_photo_enrolled_twice_is_found_at_its_first_row_by_both_scans(people):
    """Identical rows far apart (one photo enrolled twice): both scans return the first of them
    with the same cosine, whatever rows sit around them."""
    real, _ = people
    rng = np.random.default_rng(5)
    near = real[rng.integers(0, len(real), 30_000)] + rng.normal(0, 0.05, (30_000, real.shape[1]))
    near = (near / np.linalg.norm(near, axis=1, keepdims=True)).astype(np.float32)
    matrix = np.concatenate([near[:7_001], real[:40], near[7_001:21_003], real[:40], near[21_003:]])
    gallery = Gallery.of(np.arange(1, len(matrix) + 1), [f"f{i}" for i in range(len(matrix))],
                         [None] * len(matrix), ["u"] * len(matrix), matrix)
    for k, query in enumerate(real[:40]):
        exact = scan.exact_top1(matrix, query)
        assert exact[0] == 7_001 + k
        assert gallery.search(query, quantised_from=0) == exact == gallery.search(query, 2, 10**9)


def test_search_without_the_kernel_is_the_float32_scan(people, monkeypatch):
    """An install without a C compiler (no kernel) scans float32 and returns the same faces."""
    real, _ = people
    gallery = Gallery.of(np.arange(1, len(real) + 1), [f"f{i}" for i in range(len(real))],
                         [None] * len(real), ["u"] * len(real), real)
    with_kernel = [gallery.search(q, quantised_from=0) for q in real]
    monkeypatch.setattr(scan, "KERNEL", None)
    without = [gallery.search(q, quantised_from=0) for q in real]
    assert [i for i, _ in without] == [i for i, _ in with_kernel]
    assert np.allclose([c for _, c in without], [c for _, c in with_kernel], atol=1e-6)


def test_int8_copy_follows_enrollment_and_revocation(enrolled, engine, faces_dir):
    """Through the change feed: a revoked user's faces leave the int8 copy with the float32 rows,
    an added face is found by the int8 scan, and the copy is always the quantised rows."""
    index = UserIndex(enrolled.store, "door", engine.model_version, quantised_from=0)
    index.load()
    biden, obama = _probe(engine, faces_dir, "biden/2.jpg"), _probe(engine, faces_dir, "obama/2.jpg")
    assert index.best(biden).user_id == "biden" and len(index) == 2

    def consistent() -> None:
        g = index._gallery
        assert np.array_equal(g.q8, scan.quantise(g.matrix)[0])
        assert len(g.q8) == len(g.matrix) == len(g.ids) == len(g.user_ids) == len(index)

    users.delete_user(enrolled, "door", "biden")
    assert index.refresh(0)
    consistent()
    assert len(index) == 1 and "biden" not in index._gallery.user_ids.tolist()
    match = index.best(biden)
    assert match is None or match.user_id != "biden"
    users.create_user(enrolled, "door", "kit")
    faces.index_faces(enrolled, "door", faces_dir / "people/kit_harington/1.jpg", "kit-1", user_id="kit")
    faces.index_faces(enrolled, "door", faces_dir / "people/obama/3.jpg", "obama-3", user_id="obama")
    assert index.refresh(0)
    consistent()
    assert len(index) == 3
    assert index.best(_probe(engine, faces_dir, "kit_harington/2.jpg")).user_id == "kit"
    assert index.best(obama).user_id == "obama"
    kit_face = index.best(_probe(engine, faces_dir, "kit_harington/2.jpg")).face_id
    users.disassociate_faces(enrolled, "door", "kit", [kit_face])
    faces.delete_faces(enrolled, "door", [kit_face])
    assert index.refresh(0)
    consistent()
    assert len(index) == 2 and kit_face not in index._gallery.face_ids.tolist()
    match = index.best(_probe(engine, faces_dir, "kit_harington/2.jpg"))
    assert match is None or match.user_id != "kit"


def test_bulk_read_is_the_per_row_read(enrolled, faces_dir):
    """The columnar bulk read (chunked SQL aggregates) returns exactly the rows the per-row read
    does, across chunk boundaries."""
    users.create_user(enrolled, "door", "rose")
    faces.index_faces(enrolled, "door", faces_dir / "people/rose_leslie/1.jpg", None, user_id="rose")
    faces.index_faces(enrolled, "door", faces_dir / "people/obama/2.jpg", "no-user")
    rows = enrolled.store.collection_faces("door")
    for chunk in (1, 2, 100):
        cols = enrolled.store.collection_face_columns("door", chunk=chunk)
        assert cols.ids.tolist() == [r.id for r in rows]
        assert cols.face_ids == [r.face_id for r in rows]
        assert cols.user_ids == [r.user_id for r in rows]
        assert cols.external_image_ids == [r.external_image_id for r in rows]
        assert np.array_equal(cols.embeddings, np.stack([r.embedding for r in rows]))
    only = enrolled.store.collection_face_columns("door", users_only=True, chunk=2)
    assert only.ids.tolist() == [r.id for r in rows if r.user_id is not None]


def test_malformed_embedding_leaves_the_index_unusable(enrolled, engine, faces_dir):
    index = UserIndex(enrolled.store, "door", engine.model_version, quantised_from=0)
    index.load()
    with enrolled.store.transaction() as c:
        c.execute("UPDATE faces SET embedding = zeroblob(508) WHERE external_image_id = 'biden-badge'")
    with pytest.raises(StoreError):
        index.load()
    assert not index.usable and len(index) == 0
    with pytest.raises(StoreError):
        index.best(_probe(engine, faces_dir, "obama/2.jpg"))


def test_bulk_read_grows_past_a_stale_row_count():
    """The bulk read allocates the float32 matrix for the row count it read first; rows added
    after that count (a read outside one transaction) are still decoded, in order."""
    from facelink.enroll.store import _ColumnsBuilder

    rng = np.random.default_rng(5)
    rows = rng.normal(size=(5, 128)).astype(np.float32)
    columns = _ColumnsBuilder("door", 2)
    columns.add(0, 2, 0, rows[:2].tobytes(), "1,2", "a\nb", "u\n", "x\n")
    columns.add(2, 3, 0, rows[2:].tobytes(), "3,4,7", "c\nd\ne", "u\nu\nv", "\n\ny")
    faces = columns.finished()
    assert np.array_equal(faces.embeddings, rows) and faces.ids.tolist() == [1, 2, 3, 4, 7]
    assert faces.face_ids == list("abcde") and faces.user_ids == ["u", None, "u", "u", "v"]
    assert faces.external_image_ids == ["x", None, None, None, "y"]
    with pytest.raises(StoreError, match="malformed"):
        columns.add(7, 2, 0, rows[:1].tobytes(), "8,9", "f\ng", "\n", "\n")


CHUNK_SQL = "group_concat(embedding"  # one read of the bulk read's chunks


def _faces_columns_threads() -> list[str]:
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("face-columns")]


def test_bulk_read_stops_at_the_first_failure(enrolled, faces_dir, monkeypatch):
    """One chunk a row: a read failing midway, or a malformed row early, ends the read with a
    StoreError within a chunk or two (not after reading the rest), and no decoder thread is
    left running."""
    for photo in ("obama/2.jpg", "biden/2.jpg", "obama/3.jpg", "obama/4.jpg"):
        faces.index_faces(enrolled, "door", faces_dir / "people" / photo, None,
                          user_id=photo.split("/")[0])
    assert len(enrolled.store.collection_faces("door")) == 6
    calls = _faces_reads(monkeypatch, CHUNK_SQL, fails=lambda k: k == 3)
    with pytest.raises(StoreError, match="injected"):
        enrolled.store.collection_face_columns("door", chunk=1)
    assert calls == [1, 2, 3] and not _faces_columns_threads()
    monkeypatch.undo()
    first = min(r.id for r in enrolled.store.collection_faces("door"))
    with enrolled.store.transaction() as c:
        c.execute("UPDATE faces SET embedding = zeroblob(508) WHERE id = ?", (first,))
    calls = _faces_reads(monkeypatch, CHUNK_SQL, fails=lambda k: False)
    with pytest.raises(StoreError, match="malformed"):
        enrolled.store.collection_face_columns("door", chunk=1)
    assert len(calls) <= 3 and not _faces_columns_threads()


@pytest.mark.parametrize("query", ["nan", "zero", "long", "short"])
def test_a_query_that_is_not_an_embedding_is_refused_by_every_search(people, query):
    """The embedder returns unit vectors; anything else (a NaN, a zero vector, one 2x long or
    half long) is a ValueError from both scans and the card's one-user search — never a match
    (the door fails closed on it)."""
    real, names = people
    n = len(real)
    gallery = Gallery.of(np.arange(1, n + 1), [f"f{i}" for i in range(n)], [None] * n, names, real)
    bad = {"nan": np.where(np.arange(128) == 0, np.nan, real[0]), "zero": np.zeros(128),
           "long": real[0] * 2, "short": real[0] * 0.5}[query].astype(np.float32)
    for quantised_from in (0, 10**9):
        with pytest.raises(ValueError, match="not finite|not a unit vector"):
            gallery.search(bad, quantised_from=quantised_from)
    with pytest.raises(ValueError, match="not finite|not a unit vector"):
        gallery.search_user(names[0], bad)
    assert gallery.search(real[0], quantised_from=0) == gallery.search(real[0], quantised_from=10**9)
