"""Pinned data files: the registry matches the staged copies, third-party copies say so, and staging is hash-verified or nothing."""

from __future__ import annotations

import shutil

import pytest

from plmexit.cli import main
from plmexit.data import sources
from plmexit.download import sha256_file
from plmexit.errors import DownloadError

DEEPSOL = "deepsol/val_tgt"


def test_registry_matches_every_staged_file_and_points_at_a_pinned_commit(shared_data):
    for key, pinned in sources.PINNED_FILES.items():
        assert sha256_file(shared_data / key) == pinned.sha256, key
        assert len(pinned.commit) == 40 and pinned.url == f"https://raw.githubusercontent.com/{pinned.repo}/{pinned.commit}/{pinned.path}"
        # ProteinGym's assays pinned one by one are copies in other people's repositories, and say so.
        assert pinned.third_party == (pinned.dms_id is not None), key
        assert pinned.label == ("third-party copy, " if pinned.third_party else "") + f"{pinned.repo}@{pinned.commit}"
    assert sources.PINNED_FILES["proteingym/pkermut_datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv"].label == (
        "third-party copy, florisvdf/PKermut@67f8bbe00d3423513b6f4c7f339e9c9625f884c6"
    )
    assert sources.proteingym_assay_key("DNJA1_HUMAN_Tsuboyama_2023_2LO1") == "proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv"
    assert sources.proteingym_assay_key("NOT_AN_ASSAY") is None


@pytest.fixture
def mirror(http_server, shared_data):
    """A local HTTP mirror laid out by key, serving copies of the staged files."""
    for key in (DEEPSOL, "flip_gb1/5LDE_1.fasta"):
        (http_server.directory / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shared_data / key, http_server.directory / key)
    return http_server


def test_download_from_a_mirror(mirror, tmp_path, shared_data, files_under):
    out = tmp_path / "data" / DEEPSOL

    assert sources.stage(DEEPSOL, out, base_url=mirror.url("")) == sources.PINNED_FILES[DEEPSOL].sha256
    assert out.read_bytes() == (shared_data / DEEPSOL).read_bytes()
    assert files_under(tmp_path / "data") == [DEEPSOL]


def test_a_corrupted_download_is_an_error_and_leaves_nothing(mirror, tmp_path, files_under):
    served = mirror.directory / DEEPSOL
    served.write_bytes(served.read_bytes().replace(b"1\n", b"0\n", 1))  # one flipped label
    out = tmp_path / "data" / DEEPSOL

    with pytest.raises(DownloadError, match=rf"{DEEPSOL}: sha256 is [0-9a-f]{{64}}, expected {sources.PINNED_FILES[DEEPSOL].sha256}; .*nothing was written"):
        sources.stage(DEEPSOL, out, base_url=mirror.url(""))
    assert not (tmp_path / "data").exists() or files_under(tmp_path / "data") == []


def test_a_missing_file_on_the_mirror_is_a_clear_error(mirror, tmp_path):
    with pytest.raises(DownloadError, match=r"could not download http://127\.0\.0\.1:\d+/deepsol/val_src \(.*404"):
        sources.stage("deepsol/val_src", tmp_path / "val_src", base_url=mirror.url(""))
    assert not (tmp_path / "val_src").exists()


def test_local_copies_are_verified_and_never_downloaded(shared_data, tmp_path):
    out = tmp_path / "data" / DEEPSOL

    sources.stage(DEEPSOL, out, local_dir=shared_data, base_url="http://127.0.0.1:9/unreachable")

    assert out.read_bytes() == (shared_data / DEEPSOL).read_bytes()


def test_a_wrong_local_copy_is_an_error_and_leaves_nothing(shared_data, tmp_path, files_under):
    local = tmp_path / "staged"
    (local / "deepsol").mkdir(parents=True)
    (local / DEEPSOL).write_text("0\n1\n")

    with pytest.raises(DownloadError, match=rf"{local / DEEPSOL}: sha256 is .*, expected .* \(sameerkhurana10/DSOL_rv0\.2@9cc5.*: data/val_tgt\); the local copy is not that file"):
        sources.stage(DEEPSOL, tmp_path / "out" / DEEPSOL, local_dir=local)
    with pytest.raises(DownloadError, match=r"does not exist; stage deepsol/val_src in data.local_dir"):
        sources.stage("deepsol/val_src", tmp_path / "out" / "val_src", local_dir=local)
    assert not (tmp_path / "out").exists() or files_under(tmp_path / "out") == []


def test_an_unknown_key_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match=r"'deepsol/train_src' is not a pinned data file; known files: "):
        sources.stage("deepsol/train_src", tmp_path / "x")


def test_fetch_data_command(mirror, tmp_path, capsys):
    out = tmp_path / "val_tgt"
    assert main(["fetch-data", "--file", DEEPSOL, "--base-url", mirror.url(""), "--out", str(out)]) == 0
    assert sha256_file(out) == sources.PINNED_FILES[DEEPSOL].sha256
    capsys.readouterr()  # the first download's log

    (mirror.directory / DEEPSOL).write_text("corrupt\n")
    assert main(["fetch-data", "--file", DEEPSOL, "--base-url", mirror.url(""), "--out", str(tmp_path / "again")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("plmexit fetch-data: error: ") and "sha256" in err[0]
    assert not (tmp_path / "again").exists()


def test_a_staged_copy_is_its_own_file(shared_data, tmp_path):
    """Not a link: staging the same local copy again elsewhere must leave the first one untouched,
    or Snakemake would see an updated input (a new link moves the shared inode's change time)."""
    first, second = tmp_path / "a" / DEEPSOL, tmp_path / "b" / DEEPSOL
    sources.stage(DEEPSOL, first, local_dir=shared_data)
    before = first.stat()

    sources.stage(DEEPSOL, second, local_dir=shared_data)

    after = first.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (before.st_ino, before.st_mtime_ns, before.st_ctime_ns)
    assert before.st_ino != (shared_data / DEEPSOL).stat().st_ino and before.st_nlink == 1
