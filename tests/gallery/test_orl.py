"""Enroll and search on real photos: ORL (40 people, 92x112 grey, detected and aligned) with OpenCV Zoo's SFace;
three photos of each person enrolled, two searched.

The reference is computed here from the embeddings, independently of :mod:`qualiface.gallery`: templates are the
float64 mean of each identity's unit embeddings (SFace has no quality score, so the weighting is uniform),
normalised; a probe's candidates are the templates in descending order of cosine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from _helpers.shared_data import ORL, SFACE, need
from qualiface.cli.app import app
from qualiface.decisions import DecisionPolicy
from qualiface.gallery import Gallery, add_images, load_gallery, save_gallery, search_embeddings
from qualiface.gallery.enroll import file_digest

runner = CliRunner()
PEOPLE = range(1, 41)
ENROLL, PROBE = (1, 2, 3), (9, 10)


def _photo(person: int, photo: int) -> Path:
    return ORL / f"s{person}" / f"{photo}.pgm"


@pytest.fixture(scope="module")
def orl():
    """SFace, and the embedding of photos 1, 2, 3, 9 and 10 of every ORL person (a photo whose face was not found
    is absent)."""
    need(ORL / "s1", SFACE)
    from qualiface.models import load_model
    from qualiface.use import embed_faces, load_faces

    model = load_model(str(SFACE))
    paths = [_photo(p, i) for p in PEOPLE for i in (*ENROLL, *PROBE)]
    faces = load_faces(paths)
    embeddings, _ = embed_faces(model, faces)
    return model, {Path(path): embeddings[row].astype(np.float64) for row, (path, _) in enumerate(faces.sources)}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _reference(emb: dict[Path, np.ndarray], people, enroll, probes):
    """Identity names, templates (float64) and, per probe photo, the candidates' order and similarities."""
    names, templates = [], []
    for p in people:
        rows = [_unit(emb[_photo(p, i)]) for i in enroll if _photo(p, i) in emb]
        names.append(f"s{p}")
        templates.append(_unit(np.mean(rows, axis=0)))
    t = np.array(templates)
    out = {}
    for p in people:
        for i in probes:
            if _photo(p, i) in emb:
                scores = t @ _unit(emb[_photo(p, i)])
                order = np.argsort(-scores, kind="stable")
                out[_photo(p, i)] = ([names[j] for j in order], scores[order])
    return names, t, out


def test_rank1_on_orl_equals_the_float64_reference(orl) -> None:
    model, emb = orl
    names, ref_templates, ref = _reference(emb, PEOPLE, ENROLL, PROBE)
    enrolled = [_photo(p, i) for p in PEOPLE for i in ENROLL if _photo(p, i) in emb]
    report = add_images(
        Gallery.empty(model.card.stamp(), model.embedding_dim, model.quality_method),
        np.array([emb[f] for f in enrolled]),
        None,
        [f.parent.name for f in enrolled],
        [str(f) for f in enrolled],
        [file_digest(f) for f in enrolled],
    )
    gallery = report.gallery
    assert gallery.identities == names
    np.testing.assert_allclose(gallery.templates, ref_templates, atol=1e-6)
    probes = list(ref)
    results = search_embeddings(
        gallery,
        np.array([emb[f] for f in probes]),
        None,
        DecisionPolicy.from_model(model, threshold=0.3),
        k=5,
        files=[str(f) for f in probes],
    )
    for result, probe in zip(results, probes, strict=True):
        ref_names, ref_scores = ref[probe]
        assert [c.identity for c in result.candidates] == ref_names[:5]
        np.testing.assert_allclose([c.similarity for c in result.candidates], ref_scores[:5], atol=1e-5)
        assert result.decision["decision"] == ("match" if ref_scores[0] >= 0.3 else "non-match")
    rank1 = np.mean([r.candidates[0].identity == Path(r.file).parent.name for r in results])
    ref_rank1 = np.mean([ref[p][0][0] == p.parent.name for p in probes])
    assert rank1 == ref_rank1
    assert rank1 >= 0.9  # SFace on ORL: the gallery works on real faces


def _folder(tmp_path: Path, people, photos) -> Path:
    """Copies of ORL photos in <person>/<photo>.pgm folders (the identity is the folder's name)."""
    root = tmp_path / "enroll"
    for p in people:
        (root / f"s{p}").mkdir(parents=True, exist_ok=True)
        for i in photos:
            shutil.copy(_photo(p, i), root / f"s{p}" / f"{i}.pgm")
    return root


def _cli(*args: str):
    return runner.invoke(app, [*args, "--model", str(SFACE), "--no-progress"])


def test_cli_enroll_then_search_equals_the_reference_and_appends(orl, tmp_path: Path) -> None:
    _, emb = orl
    gallery = tmp_path / "g.npz"
    first = _cli("enroll", str(_folder(tmp_path, range(1, 6), range(1, 4))), "--gallery", str(gallery))
    assert first.exit_code == 0, first.output
    assert "enrolled 15 image(s) (5 new identities)" in first.stdout
    assert "gives no quality score: templates are uniform means" in first.stderr
    # append: a sixth person from a CSV (paths relative to it), and s1's photos again (skipped, not doubled)
    csv_file = tmp_path / "ids.csv"
    csv_file.write_text("file,identity\n" + "".join(f"{_photo(6, i)},s6\n" for i in range(1, 4)))
    second = _cli("enroll", "--identities", str(csv_file), "--gallery", str(gallery))
    assert second.exit_code == 0, second.output
    third = _cli("enroll", str(tmp_path / "enroll" / "s1"), "--gallery", str(gallery))
    assert third.exit_code == 0, third.output
    assert "nothing new to enroll" in third.stdout
    assert f"skipped {tmp_path / 'enroll' / 's1' / '1.pgm'}: already enrolled as 's1'" in third.stderr
    stored = load_gallery(gallery)
    assert (stored.n_identities, stored.n_images) == (6, 18)

    probes = [_photo(p, i) for p in range(1, 7) for i in (9, 10)]
    out = tmp_path / "results.json"
    result = _cli("search", *map(str, probes), "--gallery", str(gallery), "--out", str(out), "--top-k", "3")
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    _, _, ref = _reference(emb, range(1, 7), range(1, 4), (9, 10))
    assert [r["file"] for r in document["results"]] == [str(p) for p in probes if p in ref]
    for row in document["results"]:
        ref_names, ref_scores = ref[Path(row["file"])]
        assert [c["identity"] for c in row["candidates"]] == ref_names[:3]
        np.testing.assert_allclose([c["similarity"] for c in row["candidates"]], ref_scores[:3], atol=1e-4)
        assert row["decision"]["decision"] == "undecided"  # SFace has no threshold and none was given
        assert row["identity"] is None
        assert len(row["box"]) == 4
    again = _cli("search", str(probes[0]), "--gallery", str(gallery), "--out", str(out))
    assert again.exit_code == 2
    assert "exists; pass --overwrite" in again.stderr


def test_cli_search_decides_with_a_threshold_and_writes_csv(orl, tmp_path: Path) -> None:
    _, emb = orl
    gallery = tmp_path / "g.npz"
    assert _cli("enroll", str(_folder(tmp_path, range(1, 4), range(1, 4))), "--gallery", str(gallery)).exit_code == 0
    mate, stranger = _photo(2, 9), _photo(12, 9)  # s12 is not enrolled
    _, _, ref = _reference(emb, range(1, 4), range(1, 4), (9,))
    json_run = _cli("search", str(mate), str(stranger), "--gallery", str(gallery), "--threshold", "0.363", "--json")
    assert json_run.exit_code == 0, json_run.output
    rows = {Path(r["file"]): r for r in json.loads(json_run.stdout)["results"]}
    assert rows[mate]["identity"] == "s2"
    assert rows[mate]["decision"]["decision"] == "match"
    np.testing.assert_allclose(rows[mate]["decision"]["similarity"], ref[mate][1][0], atol=1e-4)
    assert rows[stranger]["decision"]["decision"] == "non-match"
    assert rows[stranger]["identity"] is None
    out = tmp_path / "r.csv"
    csv_run = _cli("search", str(mate), "--gallery", str(gallery), "--threshold", "0.363", "-o", str(out))
    assert csv_run.exit_code == 0, csv_run.output
    lines = out.read_text().splitlines()
    assert lines[0] == "file,face_index,rank,identity,similarity,confidence,decision,threshold,quality"
    assert lines[1].startswith(f"{mate},0,1,s2,")
    assert ",match,0.363000," in lines[1]
    assert len(lines) == 4  # three identities, all listed


def test_cli_search_with_another_model_is_refused_in_one_line(orl, tmp_path: Path) -> None:
    gallery = tmp_path / "g.npz"
    assert _cli("enroll", str(_folder(tmp_path, [1], [1])), "--gallery", str(gallery)).exit_code == 0
    stored = load_gallery(gallery)
    stored.model = {**stored.model, "model": "another", "model_sha256": "0" * 64}
    save_gallery(stored, gallery)
    for command in ("search", "enroll"):
        result = _cli(command, str(_photo(1, 2)), "--gallery", str(gallery))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.strip().splitlines()[-1:]
        assert line.startswith(f"error: {gallery}: gallery enrolled with model 'another' (sha256 0000000000000000")
        assert "not comparable" in line


def test_cli_faiss_index_gives_the_exact_answer(orl, tmp_path: Path) -> None:
    pytest.importorskip("faiss", reason="faiss-cpu not installed: pip install 'qualiface[faiss]'")
    gallery = tmp_path / "g.npz"
    assert _cli("enroll", str(_folder(tmp_path, range(1, 5), range(1, 3))), "--gallery", str(gallery)).exit_code == 0
    probes = [str(_photo(p, 10)) for p in range(1, 5)]
    exact = _cli("search", *probes, "--gallery", str(gallery), "--json")
    flat = _cli("search", *probes, "--gallery", str(gallery), "--json", "--index", "faiss")
    assert exact.exit_code == 0, exact.output
    assert flat.exit_code == 0, flat.output
    a, b = json.loads(exact.stdout)["results"], json.loads(flat.stdout)["results"]
    names = [[[c["identity"] for c in r["candidates"]] for r in results] for results in (a, b)]
    assert names[0] == names[1]
    np.testing.assert_allclose(
        [[c["similarity"] for c in r["candidates"]] for r in a],
        [[c["similarity"] for c in r["candidates"]] for r in b],
        atol=1e-5,
    )
    bad = _cli("search", *probes, "--gallery", str(gallery), "--index", "annoy")
    assert bad.exit_code == 2
    assert "unknown index 'annoy'" in bad.stderr


def test_cli_search_without_any_probe_face_writes_nothing(tmp_path: Path) -> None:
    from PIL import Image

    need(ORL / "s1", SFACE)
    gallery = tmp_path / "g.npz"
    assert _cli("enroll", str(_folder(tmp_path, [1], [1])), "--gallery", str(gallery)).exit_code == 0
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((120, 100, 3), 128, np.uint8)).save(blank)
    out = tmp_path / "r.json"
    result = _cli("search", str(blank), "--gallery", str(gallery), "--out", str(out))
    assert result.exit_code == 1, result.output
    assert f"skipped {blank}: no_face" in result.stderr
    assert "error: no probe face found in 1 file(s); nothing written" in result.stderr
    assert not out.exists()


def test_cli_search_without_model_uses_the_enrolled_model_file(orl, tmp_path: Path) -> None:
    """`qualiface search PROBES --gallery G`: the model the gallery was enrolled with, checked by its SHA-256."""
    model = tmp_path / "sface.onnx"
    model.write_bytes(SFACE.read_bytes())
    gallery = tmp_path / "g.npz"
    folder = _folder(tmp_path, range(1, 4), range(1, 4))
    enrolled = runner.invoke(app, ["enroll", str(folder), "--gallery", str(gallery), "-m", str(model), "--no-progress"])
    assert enrolled.exit_code == 0, enrolled.output
    assert load_gallery(gallery).model_file == str(model.resolve())
    probe = str(_photo(2, 9))
    given = runner.invoke(app, ["search", probe, "--gallery", str(gallery), "-m", str(model), "--json"])
    implied = runner.invoke(app, ["search", probe, "--gallery", str(gallery), "--json"])
    assert implied.exit_code == 0, implied.output
    assert json.loads(implied.stdout)["results"] == json.loads(given.stdout)["results"]
    more = runner.invoke(app, ["enroll", str(_photo(4, 1)), "--gallery", str(gallery), "--no-progress"])
    assert more.exit_code == 0, more.output  # appending also takes the gallery's model
    assert load_gallery(gallery).n_images == 10
    fresh = runner.invoke(app, ["enroll", str(folder), "--gallery", str(tmp_path / "new.npz")])
    assert fresh.exit_code == 2
    assert f"give --model: {tmp_path / 'new.npz'} is a new gallery" in fresh.stderr
    model.unlink()
    gone = runner.invoke(app, ["search", probe, "--gallery", str(gallery)])
    assert gone.exit_code == 2
    assert gone.stderr.strip().splitlines()[-1] == (
        f"error: {gallery}: give --model: the gallery does not name an existing model file ({model.resolve()} is gone)"
    )
