"""ProteinGym's released archives: fetched against a pinned sha256 or one recorded on first use, and each
assay staged byte for byte only after the reference table agreed (DMS_id, row count, every wild type).

The archives are built here in the published layout (``{archive}/{DMS_filename}`` members, as
``unzip cv_folds_singles_substitutions.zip`` gives ``cv_folds_singles_substitutions/{DMS_id}.csv``)
from the real assay files of the shared data; no test downloads anything from outside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile

import pandas as pd
import pytest

from plmexit.cli import main
from plmexit.data import archives, sources
from plmexit.errors import DownloadError, InputError
from plmexit.pipeline import task_steps
from plmexit.settings import PROTEINGYM_ARCHIVE_URL, ArchiveSettings

from workflow_runs import snakemake, write_config

CV = "cv_folds_singles_substitutions"
DMS = "DMS_ProteinGym_substitutions"
REFERENCE = "proteingym/reference_files/DMS_substitutions.csv"
# Third-party copies of ProteinGym's cv-fold files, byte for byte (kermut's); the reference table names each file {DMS_id}.csv.
COPIES = {
    "BLAT_ECOLX_Stiffler_2015": "proteingym/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv",
    "A0A1I9GEU1_NEIME_Kennouche_2019": "proteingym/cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv",
    "GFP_AEQVI_Sarkisyan_2016": "proteingym/cv_folds_singles_substitutions/GFP_AEQVI_Sarkisyan_2016.csv",
}


def build_archive(path, name, shared_data, files=None, edit=None):
    """A zip in the published layout: ``{name}/{DMS_id}.csv`` per assay (``files``: DMS_id -> bytes)."""
    files = files or {dms_id: (shared_data / key).read_bytes() for dms_id, key in COPIES.items()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr(f"{name}/", "")
        for dms_id, data in files.items():
            bundle.writestr(f"{name}/{dms_id}.csv", edit(dms_id, data) if edit else data)
    return path


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cv_zip(tmp_path, shared_data):
    return build_archive(tmp_path / f"{CV}.zip", CV, shared_data)


def test_the_settings_defaults_are_the_published_urls_of_the_pinned_release():
    for name, archive in sources.PROTEINGYM_ARCHIVES.items():
        assert archive.url() == PROTEINGYM_ARCHIVE_URL.format(name) == ArchiveSettings().source(name)
        assert archive.url() == f"https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.1/{name}.zip"
        assert archive.setting in {f.metadata["key"] for f in ArchiveSettings.settings_fields()}
        assert len(archive.sha256) == 64
    with pytest.raises(ValueError, match="unknown ProteinGym archive"):
        ArchiveSettings().source("cv_folds_multiples_substitutions")


def test_an_unpinned_archive_is_recorded_on_first_use_with_a_warning_then_verified(tmp_path, cv_zip, http_server):
    served = http_server.directory / f"{CV}.zip"
    served.write_bytes(cv_zip.read_bytes())
    url, hashes = http_server.url(f"{CV}.zip"), tmp_path / "config" / "archive_hashes.tsv"

    first = archives.fetch_archive(CV, url, tmp_path / "a.zip", tmp_path / "a.json", hashes)

    assert first.sha256 == sha256(cv_zip) and first.hash_from == str(hashes)
    assert first.warning.startswith(f"{url}: sha256 {first.sha256} is not one plmexit pins") and f"recorded in {hashes} on first use" in first.warning
    assert archives.read_hashes(hashes) == {url: first.sha256}
    assert json.loads((tmp_path / "a.json").read_text()) == dataclasses.asdict(first)
    second = archives.fetch_archive(CV, url, tmp_path / "b.zip", tmp_path / "b.json", hashes)
    assert second.warning is None and second.sha256 == first.sha256
    assert hashes.read_text().count(url) == 1

    served.write_bytes(cv_zip.read_bytes() + b"\0")  # the archive at that URL changed
    with pytest.raises(DownloadError, match=rf"{url}: sha256 is [0-9a-f]{{64}}, expected {first.sha256} \({hashes}\); if the new archive is intended, delete its line"):
        archives.fetch_archive(CV, url, tmp_path / "c.zip", tmp_path / "c.json", hashes)
    assert not (tmp_path / "c.zip").exists() and not (tmp_path / "c.json").exists()


def test_the_published_url_is_verified_against_the_pinned_hash(tmp_path, cv_zip, http_server, monkeypatch):
    """The published URL and sha256 stand in for ProteinGym's (served locally): pinned, nothing recorded, a change an error."""
    (http_server.directory / "ProteinGym_v1.1").mkdir()
    (http_server.directory / "ProteinGym_v1.1" / f"{CV}.zip").write_bytes(cv_zip.read_bytes())
    monkeypatch.setattr(sources, "PROTEINGYM_DOWNLOADS", http_server.url("").rstrip("/"))
    pinned = dataclasses.replace(sources.PROTEINGYM_ARCHIVES[CV], sha256=sha256(cv_zip))
    monkeypatch.setitem(sources.PROTEINGYM_ARCHIVES, CV, pinned)
    hashes = tmp_path / "hashes.tsv"

    fetched = archives.fetch_archive(CV, pinned.url(), tmp_path / "a.zip", tmp_path / "a.json", hashes)

    assert (fetched.warning, fetched.hash_from) == (None, sources.PROTEINGYM_HASH_SOURCE) and not hashes.exists()
    monkeypatch.setitem(sources.PROTEINGYM_ARCHIVES, CV, dataclasses.replace(pinned, sha256="0" * 64))
    with pytest.raises(DownloadError, match=rf"sha256 is {fetched.sha256}, expected 0{{64}} \(OATML-Markslab/ProteinGym@bb68.*download\.py\); the download is corrupt"):
        archives.fetch_archive(CV, pinned.url(), tmp_path / "b.zip", tmp_path / "b.json", hashes)
    assert not (tmp_path / "b.zip").exists() and not hashes.exists()


def test_a_local_archive_is_copied_and_its_hash_recorded(tmp_path, cv_zip):
    hashes = tmp_path / "hashes.tsv"
    fetched = archives.fetch_archive(CV, str(cv_zip), tmp_path / "out" / "a.zip", tmp_path / "out" / "a.json", hashes)

    assert (tmp_path / "out" / "a.zip").read_bytes() == cv_zip.read_bytes() and fetched.warning
    assert archives.read_hashes(hashes) == {str(cv_zip): sha256(cv_zip)}
    with pytest.raises(InputError, match=r"nowhere\.zip: no such file; set data\.proteingym_cv_folds to ProteinGym's cv_folds_singles_substitutions\.zip"):
        archives.fetch_archive(CV, str(tmp_path / "nowhere.zip"), tmp_path / "b.zip", tmp_path / "b.json", hashes)
    (tmp_path / "bad.tsv").write_text("url\thash\n")
    with pytest.raises(InputError, match=r"bad\.tsv: not plmexit's archive hashes file"):
        archives.fetch_archive(CV, str(cv_zip), tmp_path / "b.zip", tmp_path / "b.json", tmp_path / "bad.tsv")


@pytest.fixture
def fetched(tmp_path, cv_zip):
    archives.fetch_archive(CV, str(cv_zip), tmp_path / "data" / f"{CV}.zip", tmp_path / "data" / f"{CV}.json", tmp_path / "hashes.tsv")
    return tmp_path / "data" / f"{CV}.zip", tmp_path / "data" / f"{CV}.json"


@pytest.mark.parametrize("dms_id", sorted(COPIES))
def test_each_assay_is_staged_byte_for_byte_with_its_sha256(tmp_path, shared_data, fetched, dms_id):
    out = tmp_path / "staged" / f"{dms_id}.csv"

    record = archives.stage_assay(*fetched, shared_data / REFERENCE, dms_id, out, tmp_path / "staged" / f"{dms_id}.json")

    assert out.read_bytes() == (shared_data / COPIES[dms_id]).read_bytes()
    assert record == json.loads((tmp_path / "staged" / f"{dms_id}.json").read_text())
    assert record["sha256"] == sha256(out) == sources.PINNED_FILES[COPIES[dms_id]].sha256
    assert (record["file"], record["archive"], record["archive_sha256"]) == (f"{CV}/{dms_id}.csv", f"{CV}.zip", sha256(fetched[0]))
    reference = pd.read_csv(shared_data / REFERENCE).set_index("DMS_id")
    assert record["variants"] == reference.loc[dms_id, "DMS_number_single_mutants"]


def test_the_row_count_is_the_reference_column_of_the_archive(tmp_path, shared_data):
    """The all-substitutions archive's GFP has 51,714 variants; the singles file (1,084) is not it."""
    bundle = build_archive(tmp_path / f"{DMS}.zip", DMS, shared_data)
    archives.fetch_archive(DMS, str(bundle), tmp_path / "d.zip", tmp_path / "d.json", tmp_path / "hashes.tsv")
    archives.stage_assay(tmp_path / "d.zip", tmp_path / "d.json", shared_data / REFERENCE, "BLAT_ECOLX_Stiffler_2015", tmp_path / "b.csv", tmp_path / "b.json")

    with pytest.raises(InputError, match=rf"d\.zip:{DMS}/GFP_AEQVI_Sarkisyan_2016\.csv: assay GFP_AEQVI_Sarkisyan_2016 has 1084 variants, but the reference table's DMS_total_number_mutants is 51714"):
        archives.stage_assay(tmp_path / "d.zip", tmp_path / "d.json", shared_data / REFERENCE, "GFP_AEQVI_Sarkisyan_2016", tmp_path / "g.csv", tmp_path / "g.json")
    assert not (tmp_path / "g.csv").exists() and not (tmp_path / "g.json").exists()


def test_an_assay_of_another_release_fails_its_count(tmp_path, shared_data):
    """kermut's DNJA1 (ProteinGym v1.0, 1,215 singles) under the v1.1 name (1,216 in the reference table)."""
    data = (shared_data / "proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv").read_bytes()
    bundle = build_archive(tmp_path / f"{CV}.zip", CV, shared_data, files={"DNJA1_HUMAN_Tsuboyama_2023_2LO1": data})
    archives.fetch_archive(CV, str(bundle), tmp_path / "a.zip", tmp_path / "a.json", tmp_path / "hashes.tsv")

    with pytest.raises(InputError, match=r"assay DNJA1_HUMAN_Tsuboyama_2023_2LO1 has 1215 variants, but the reference table's DMS_number_single_mutants is 1216; the archive and the reference table are of different ProteinGym releases"):
        archives.stage_assay(tmp_path / "a.zip", tmp_path / "a.json", shared_data / REFERENCE, "DNJA1_HUMAN_Tsuboyama_2023_2LO1", tmp_path / "x.csv", tmp_path / "x.json")


def _edit_row(data: bytes, row: int, edit) -> bytes:
    """The CSV's ``row``-th data row (1-based file line ``row + 1``) with ``edit(fields)`` applied."""
    lines = data.decode().split("\n")
    header = lines[0].split(",")
    fields = lines[row].split(",")
    edit(dict(zip(header, range(len(header)))), fields)
    lines[row] = ",".join(fields)
    return "\n".join(lines).encode()


def test_a_mutated_sequence_whose_wild_type_is_not_target_seq_is_an_error(tmp_path, shared_data):
    def change_residue_far_from_the_mutant(columns, fields):
        sequence = fields[columns["mutated_sequence"]]
        fields[columns["mutated_sequence"]] = ("W" if sequence[199] != "W" else "A").join([sequence[:199], sequence[200:]])

    blat = COPIES["BLAT_ECOLX_Stiffler_2015"]
    files = {"BLAT_ECOLX_Stiffler_2015": _edit_row((shared_data / blat).read_bytes(), 3, change_residue_far_from_the_mutant)}
    bundle = build_archive(tmp_path / f"{CV}.zip", CV, shared_data, files=files)
    archives.fetch_archive(CV, str(bundle), tmp_path / "a.zip", tmp_path / "a.json", tmp_path / "hashes.tsv")
    mutant = pd.read_csv(shared_data / blat)["mutant"].iloc[2]
    target = pd.read_csv(shared_data / REFERENCE).set_index("DMS_id").loc["BLAT_ECOLX_Stiffler_2015", "target_seq"]

    with pytest.raises(InputError, match=rf"row 4 \({mutant}\): the wild type of mutated_sequence is not target_seq of BLAT_ECOLX_Stiffler_2015: it has [A-Z] at position 200 \(mutant undone\), target_seq has {target[199]}"):
        archives.stage_assay(tmp_path / "a.zip", tmp_path / "a.json", shared_data / REFERENCE, "BLAT_ECOLX_Stiffler_2015", tmp_path / "x.csv", tmp_path / "x.json")
    assert not (tmp_path / "x.csv").exists()


def test_a_mutant_that_disagrees_with_target_seq_an_unknown_assay_and_a_missing_member(tmp_path, shared_data, fetched):
    def wrong_from_residue(columns, fields):
        mutant = fields[columns["mutant"]]
        fields[columns["mutant"]] = ("W" if mutant[0] != "W" else "A") + mutant[1:]

    blat = COPIES["BLAT_ECOLX_Stiffler_2015"]
    bundle = build_archive(tmp_path / "w.zip", CV, shared_data, files={"BLAT_ECOLX_Stiffler_2015": _edit_row((shared_data / blat).read_bytes(), 1, wrong_from_residue)})
    archives.fetch_archive(CV, str(bundle), tmp_path / "w2.zip", tmp_path / "w2.json", tmp_path / "hashes.tsv")
    with pytest.raises(InputError, match=r"w2\.zip:cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015\.csv: row 2: mutant 'W.*' says position \d+ is W, but target_seq of BLAT_ECOLX_Stiffler_2015"):
        archives.stage_assay(tmp_path / "w2.zip", tmp_path / "w2.json", shared_data / REFERENCE, "BLAT_ECOLX_Stiffler_2015", tmp_path / "x.csv", tmp_path / "x.json")
    with pytest.raises(InputError, match=r"DMS_substitutions\.csv: no assay 'NOT_AN_ASSAY'"):
        archives.stage_assay(*fetched, shared_data / REFERENCE, "NOT_AN_ASSAY", tmp_path / "x.csv", tmp_path / "x.json")
    with pytest.raises(InputError, match=rf"no member {CV}/NUD15_HUMAN_Suiter_2020\.csv for assay NUD15_HUMAN_Suiter_2020 \(0 of that file name\); is it ProteinGym's {CV}\.zip\?"):
        archives.stage_assay(*fetched, shared_data / REFERENCE, "NUD15_HUMAN_Suiter_2020", tmp_path / "x.csv", tmp_path / "x.json")
    assert not (tmp_path / "x.csv").exists()


def test_prepare_records_every_files_sha256_and_the_archive_it_came_from(tmp_path, shared_data, fetched):
    from plmexit.data.tasks import TaskSpec

    staged = tmp_path / "staged" / "BLAT_ECOLX_Stiffler_2015.csv"
    record = archives.stage_assay(*fetched, shared_data / REFERENCE, "BLAT_ECOLX_Stiffler_2015", staged, staged.with_suffix(".json"))
    spec = TaskSpec(name="BLAT.fold_modulo_5", format="proteingym", path=staged, type="regression", reference=shared_data / REFERENCE,
                    dms_id="BLAT_ECOLX_Stiffler_2015", fold_scheme="fold_modulo_5", max_sequences=50)

    task_steps.prepare_task(spec, tmp_path / "t.tsv", tmp_path / "t.json", provenance=staged.with_suffix(".json"))

    info = json.loads((tmp_path / "t.json").read_text())
    assert info["files"] == {
        "path": {"path": str(staged), "sha256": record["sha256"]},
        "reference": {"path": str(shared_data / REFERENCE), "sha256": sources.PINNED_FILES[REFERENCE].sha256,
                      "pinned": "OATML-Markslab/ProteinGym@bb685245f8f4bb95a5b54b470396c23826cd6284: reference_files/DMS_substitutions.csv"},
    }
    assert info["source"] == record and info["fold_scheme"] == "fold_modulo_5"
    staged.write_bytes(staged.read_bytes() + b"\n")
    with pytest.raises(InputError, match=r"BLAT_ECOLX_Stiffler_2015\.csv: sha256 is [0-9a-f]{64}, but .*BLAT_ECOLX_Stiffler_2015\.json staged [0-9a-f]{64}; stage the assay again"):
        task_steps.prepare_task(spec, tmp_path / "u.tsv", tmp_path / "u.json", provenance=staged.with_suffix(".json"))


def test_the_commands_fetch_warn_and_stage(tmp_path, shared_data, cv_zip, capsys):
    hashes = tmp_path / "hashes.tsv"
    code = main(["fetch-archive", "--archive", CV, "--proteingym-cv-folds", str(cv_zip), "--archive-hashes", str(hashes),
                 "--out", str(tmp_path / "a.zip"), "--info-out", str(tmp_path / "a.json")])
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]  # beside the log lines
    assert code == 0 and len(warnings) == 1 and warnings[0].startswith(f"warning: {cv_zip}: sha256 {sha256(cv_zip)} is not one plmexit pins")
    code = main(["stage-assay", "--archive", str(tmp_path / "a.zip"), "--archive-info", str(tmp_path / "a.json"), "--reference", str(shared_data / REFERENCE),
                 "--dms-id", "BLAT_ECOLX_Stiffler_2015", "--out", str(tmp_path / "b.csv"), "--info-out", str(tmp_path / "b.json")])
    assert code == 0, capsys.readouterr().err
    assert sha256(tmp_path / "b.csv") == json.loads((tmp_path / "b.json").read_text())["sha256"]
    code = main(["stage-assay", "--archive", str(tmp_path / "a.zip"), "--archive-info", str(tmp_path / "a.json"), "--reference", str(shared_data / REFERENCE),
                 "--dms-id", "NUD15_HUMAN_Suiter_2020", "--out", str(tmp_path / "n.csv"), "--info-out", str(tmp_path / "n.json")])
    err = capsys.readouterr().err
    assert code == 1 and "no member cv_folds_singles_substitutions/NUD15_HUMAN_Suiter_2020.csv" in err.strip().splitlines()[-1]


@pytest.mark.workflow
def test_the_workflow_stages_assays_from_the_archive_into_the_task_info(tmp_path, shared_data):
    """fetch_archive, stage_assay and prepare_task as the default config runs them, from a local archive."""
    bundle = build_archive(tmp_path / f"{CV}.zip", CV, shared_data)

    def from_the_archive(config):
        config["data"].update(proteingym_cv_folds=str(bundle), archive_hashes=str(tmp_path / "archive_hashes.tsv"))
        config["models"] = config["models"][:1]  # the fair-esm random model; the others name test.yaml's entries
        config.pop("exit")
        config.pop("depth")
        config["tasks"] = [{"id": "proteingym", "kind": "proteingym", "archive": CV, "assays": ["A0A1I9GEU1_NEIME_Kennouche_2019"],
                            "fold_schemes": ["fold_random_5"], "max_sequences": 100}]

    config = write_config(tmp_path, shared_data, edit=from_the_archive)
    task = "A0A1I9GEU1_NEIME_Kennouche_2019.fold_random_5"
    run = snakemake(tmp_path, "--configfile", str(config), "--cores", "1", f"results/tasks/{task}.json")
    assert run.returncode == 0, run.stderr[-3000:]
    log = (tmp_path / "results" / "logs" / "fetch_archive" / f"{CV}.log").read_text()
    assert "warning: " in log and "recorded in" in log  # the unpinned archive's hash, in the rule's log
    info = json.loads((tmp_path / "results" / "tasks" / f"{task}.json").read_text())
    staged = tmp_path / "results" / "data" / "archives" / CV / "A0A1I9GEU1_NEIME_Kennouche_2019.csv"
    assert info["files"]["path"] == {"path": "results/data/archives/cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv", "sha256": sha256(staged)}
    assert info["source"]["archive_sha256"] == sha256(bundle) and info["source"]["archive_source"] == str(bundle)
    assert archives.read_hashes(tmp_path / "archive_hashes.tsv") == {str(bundle): sha256(bundle)}


def test_prepare_names_a_third_party_copy_in_the_task_info(tmp_path, shared_data):
    from plmexit.data.tasks import TaskSpec

    path = shared_data / "proteingym/pkermut_datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv"
    spec = TaskSpec(name="TCRG1.fold_random_5", format="proteingym", path=path, type="regression", reference=shared_data / REFERENCE,
                    dms_id="TCRG1_MOUSE_Tsuboyama_2023_1E0L", fold_scheme="fold_random_5")

    task_steps.prepare_task(spec, tmp_path / "t.tsv", tmp_path / "t.json")

    info = json.loads((tmp_path / "t.json").read_text())
    assert info["files"]["path"]["pinned"] == (
        "third-party copy, florisvdf/PKermut@67f8bbe00d3423513b6f4c7f339e9c9625f884c6: tests/data/datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv"
    )
    assert info["source"] is None
