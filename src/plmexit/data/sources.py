"""The data files behind the benchmark tasks, pinned: where each comes from and its sha256; and ProteinGym's released archives.

Invariant: a file key (``deeploc/deeploc_test_set.fasta``) names one immutable file: a git blob
at a fixed commit of a public repository, with its sha256. ``stage`` puts that exact file at a
destination, either downloaded (from GitHub or a mirror laid out by key) or taken from a
directory of pre-staged copies laid out by key, and in both cases only after the hash matched.
A file taken from a repository other than its benchmark's own is a third-party copy and says so
(``PinnedFile.label``: ``third-party copy, owner/repo@commit``): the ProteinGym assays here come
from kermut, PKermut and SingleSiteProteinGYM, not from ProteinGym's release. ProteinGym's own
assays are in its released archives (``PROTEINGYM_ARCHIVES``, staged by ``plmexit.data.archives``).
Only the standard library is used, so the workflow can read these tables while building the DAG.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from plmexit.atomic import atomic_path
from plmexit.download import download, sha256_file
from plmexit.errors import DownloadError

log = logging.getLogger(__name__)

RAW_GITHUB = "https://raw.githubusercontent.com"


@dataclass(frozen=True)
class PinnedFile:
    repo: str
    commit: str
    path: str  # inside the repository
    sha256: str
    dms_id: str | None = None  # ProteinGym assays: the DMS_id of the reference table
    third_party: bool = False  # a copy of a benchmark's file in someone else's repository

    @property
    def url(self) -> str:
        return f"{RAW_GITHUB}/{self.repo}/{self.commit}/{self.path}"

    @property
    def label(self) -> str:
        """Where the file comes from, as every output and message names it."""
        return f"{'third-party copy, ' if self.third_party else ''}{self.repo}@{self.commit}"


# Keys follow the layout of a staged copy (the same as ../shared/data, see its PROVENANCE.md).
PINNED_FILES: dict[str, PinnedFile] = {
    "proteingym/reference_files/DMS_substitutions.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "reference_files/DMS_substitutions.csv", "a8f498011532a74aa9fe556a50555a75e928c5837d19c06a87592ae04049b308"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv", "343d662819218abaf7c74f81dc46677237178b4c1cb4b81e7ff38daa921b5035"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_random_5.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_random_5.csv", "9ec9288d0f5e1530f90403d8070e4203501aa2a8aedbb6100b7499c5623e8e7c"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_modulo_5.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_modulo_5.csv", "4a4e97c3359172f20612248790c2dab918113e33f70d9f0cb95cac6abc8b30ac"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_contiguous_5.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_contiguous_5.csv", "94f0c739b3dd55a83513929ec0aa9ab039bb69dadc53772df419bee6807b2bd8"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/Summary_performance_DMS_substitutions_Spearman.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/Summary_performance_DMS_substitutions_Spearman.csv", "1672851e72d2352bfc8b0f3c0ffe0bf7d98f2ee91f0ba1ae8fa1ed3b7ee7a944"),
    "proteingym/benchmarks/DMS_zero_shot/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv": PinnedFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_zero_shot/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv", "f432423b87f79ac9778dfac86e3d95be041d246bc618dc0a406b35b0b7466437"),
    "proteingym/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv": PinnedFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv", "88ffc2fe1278a16b07e284ef0b8d9b7b64682dd96b6f71f0bb7e77bbac878d0d", dms_id="BLAT_ECOLX_Stiffler_2015", third_party=True),
    "proteingym/cv_folds_singles_substitutions/GFP_AEQVI_Sarkisyan_2016.csv": PinnedFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/GFP_AEQVI_Sarkisyan_2016.csv", "1c65e7c62dcca0f061af2acc96b704bc7a9d8f6841043ce0f8892e7cce51d3f7", dms_id="GFP_AEQVI_Sarkisyan_2016", third_party=True),
    "proteingym/cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv": PinnedFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv", "15d449410abb4040d29f7e2b25a4de9318d61d6bb0a7f81f97a368d02d83aa48", dms_id="A0A1I9GEU1_NEIME_Kennouche_2019", third_party=True),
    "proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv": PinnedFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv", "c4da70fa57f6898f9df5e0622661e07f8057fa30bf783540a40f93dd1b9c926b", dms_id="DNJA1_HUMAN_Tsuboyama_2023_2LO1", third_party=True),
    "proteingym/pkermut_datasets/RASK_HUMAN_Weng_2022_binding-DARPin_K55.csv": PinnedFile("florisvdf/PKermut", "67f8bbe00d3423513b6f4c7f339e9c9625f884c6", "tests/data/datasets/RASK_HUMAN_Weng_2022_binding-DARPin_K55.csv", "954fed91a2a2d9670531fa987067c2b6b50c163b4e7e0d8463fa8d1c7c0275f4", dms_id="RASK_HUMAN_Weng_2022_binding-DARPin_K55", third_party=True),
    "proteingym/pkermut_datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv": PinnedFile("florisvdf/PKermut", "67f8bbe00d3423513b6f4c7f339e9c9625f884c6", "tests/data/datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv", "93db0e16a0306c627804f0b501c959cd8c0e94dac992ddc9efb300b26fd8e5c9", dms_id="TCRG1_MOUSE_Tsuboyama_2023_1E0L", third_party=True),
    "proteingym/single_site_mutant_score/NUD15_HUMAN_Suiter_2020.csv": PinnedFile("ginnm/SingleSiteProteinGYM", "9844690432e30a6fc0d79b29a03822787405e20a", "gym_single/mutant/NUD15_HUMAN_Suiter_2020.csv", "aa760a2aecc3de9fdc05053c2d0d465509d45260631a5fe395874da96ea23c3b", dms_id="NUD15_HUMAN_Suiter_2020", third_party=True),
    "deeploc/deeploc_test_set.fasta": PinnedFile("HannesStark/protein-localization", "7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b", "data_files/deeploc_test_set.fasta", "b4d4fb4dbf53e87fb1bff9cbad41919c7c1f2615299a0dd50ecb5a4d002b4b6a"),
    "deeploc/deeploc_our_val_set.fasta": PinnedFile("HannesStark/protein-localization", "7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b", "data_files/deeploc_our_val_set.fasta", "5fddf9a7c076c7a0c34e46bdf8a530fddb8cd17a54b28d8e7ebcf3d4fbbf77d6"),
    "deepfri_ec/nrPDB-EC_2020.04_annot.tsv": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_annot.tsv", "79e429e2efe9f8a9ad973ddb27c1ba1425f2b6aa1989fb01fe10f65a84899ed1"),
    "deepfri_ec/nrPDB-EC_2020.04_test_sequences.fasta": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test_sequences.fasta", "04500f04863d274e8b226d42d555483060cc5541e28801a8000d814efea49873"),
    "deepfri_ec/nrPDB-EC_2020.04_test.csv": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test.csv", "3cbaef7f4c022519c2f57d021ee84b6d2c342459525aec25ed056a7c2b9ad209"),
    "deepfri_ec/nrPDB-EC_2020.04_train.txt": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_train.txt", "5b674928876400203c6eb1e96250b951676024f17b2cfecf48de4f822a2606db"),
    "deepfri_ec/nrPDB-EC_2020.04_valid.txt": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_valid.txt", "2630c4d46fc35965979b57bfc1476f5cc3da17ac227c8beca9e12a3d1caf6fc2"),
    "deepfri_ec/nrPDB-EC_2020.04_test.txt": PinnedFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test.txt", "e1cfd23416673a9f594ee4c1f01c03f463baeb52ea1310f7d4b87868a28ccafe"),
    "deepsol/val_src": PinnedFile("sameerkhurana10/DSOL_rv0.2", "9cc5da72f1cf3f46350470a06a4d04abbf171f32", "data/val_src", "4b869b7ae014fc490930cee5a36284a8e7dbe80eefcb90e280378a052c64eda4"),
    "deepsol/val_tgt": PinnedFile("sameerkhurana10/DSOL_rv0.2", "9cc5da72f1cf3f46350470a06a4d04abbf171f32", "data/val_tgt", "0b2bb65e082bf9cbeb9b46cd917aa417511075404d77f491ed9afd7112e71227"),
    "flip_gb1/splits.zip": PinnedFile("J-SNACKKB/FLIP", "62cace8735f5610e2743cf06ce0f944b37fffaa6", "splits/gb1/splits.zip", "00a3c3d5be56ce35adfbec838db8ff549be369525e151a6978133da34b9fd86f"),
    "flip_gb1/5LDE_1.fasta": PinnedFile("J-SNACKKB/FLIP", "62cace8735f5610e2743cf06ce0f944b37fffaa6", "splits/gb1/5LDE_1.fasta", "0316a39393885ff3337c43fd885286d0d1517b8c26d6bf03572893298005d03b"),
}


def pinned_origin(sha256: str) -> str | None:
    """Where a file with this sha256 comes from, when it is a pinned file (``label: path``), else None."""
    found = next((pinned for pinned in PINNED_FILES.values() if pinned.sha256 == sha256), None)
    return f"{found.label}: {found.path}" if found else None


def proteingym_assay_key(dms_id: str) -> str | None:
    """The pinned file key holding a ProteinGym assay (a third-party copy), or None when none is registered."""
    for key, pinned in PINNED_FILES.items():
        if pinned.dms_id == dms_id:
            return key
    return None


def stage(key: str, out: str | Path, local_dir: str | Path | None = None, base_url: str | None = None) -> str:
    """Put the pinned file ``key`` at ``out``, hash-verified; returns its sha256.

    With ``local_dir`` the file is copied from ``local_dir/key`` and nothing is downloaded;
    otherwise it is downloaded from ``base_url/key`` when a mirror is given, else from its
    repository on GitHub. A copy, not a link: a hard link shares the local copy's inode, whose
    change time moves whenever anything else links it, and Snakemake would take that for an
    updated input and redo every step downstream.
    """
    if key not in PINNED_FILES:
        raise DownloadError(f"{key!r} is not a pinned data file; known files: {', '.join(sorted(PINNED_FILES))}")
    pinned = PINNED_FILES[key]
    if local_dir is None:
        url = f"{base_url.rstrip('/')}/{key}" if base_url else pinned.url
        found = download(url, out, pinned.sha256)
    else:
        source = Path(local_dir) / key
        if not source.is_file():
            raise DownloadError(f"{source} does not exist; stage {key} in data.local_dir {local_dir} or unset data.local_dir to download it")
        with atomic_path(out) as tmp:
            shutil.copyfile(source, tmp)
            found = sha256_file(tmp)  # the bytes that will be used, not the source, which could change meanwhile
            if found != pinned.sha256:
                raise DownloadError(f"{source}: sha256 is {found}, expected {pinned.sha256} ({pinned.label}: {pinned.path}); the local copy is not that file, replace it")
    log.info("staged %s (%s) (sha256 %s)", key, pinned.label, found)
    return found


# --- ProteinGym's released archives ---------------------------------------------------------------

PROTEINGYM_DOWNLOADS = "https://marks.hms.harvard.edu/proteingym"
# The release whose archives' sha256 ProteinGym's own downloader pins (PROTEINGYM_VERSION and the
# Hash column of proteingym/utils/download.py at the commit below). The reference table plmexit
# pins (DMS_substitutions.csv at the same commit) has had the same assays, mutant counts and target
# sequences since v1.1's reference update (commit 4912e1d, 2024-10-15); v1.2 and v1.3 added baselines.
PROTEINGYM_RELEASE = "v1.1"
PROTEINGYM_HASH_SOURCE = "OATML-Markslab/ProteinGym@bb685245f8f4bb95a5b54b470396c23826cd6284:proteingym/utils/download.py"


@dataclass(frozen=True)
class Archive:
    """One of ProteinGym's released zips of assay CSVs: ``{name}/{DMS_filename}`` inside, one per assay."""

    name: str  # the published file's stem; also the folder its members sit in
    count_column: str  # the reference table's column each assay's row count must equal
    description: str
    sha256: str  # of the release PROTEINGYM_RELEASE, as PROTEINGYM_HASH_SOURCE pins it
    setting: str  # the config key that says where it comes from (plmexit.settings.ArchiveSettings)

    @property
    def filename(self) -> str:
        return f"{self.name}.zip"

    def url(self, release: str = PROTEINGYM_RELEASE) -> str:
        """The archive's published URL (ProteinGym's README: ``.../ProteinGym_{VERSION}/{FILENAME}``)."""
        return f"{PROTEINGYM_DOWNLOADS}/ProteinGym_{release}/{self.filename}"

    def member(self, dms_filename: str) -> str:
        return f"{self.name}/{dms_filename}"


PROTEINGYM_ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in (
        Archive(
            "cv_folds_singles_substitutions", "DMS_number_single_mutants",
            "ProteinGym's single substitutions of every assay with its supervised folds (fold_random_5, fold_modulo_5, fold_contiguous_5)",
            "920f0be936233b96b5052cd23679e42355cfd2b4e6f45b4f571eb79c0b2f9c35", "data.proteingym_cv_folds",
        ),
        Archive(
            "DMS_ProteinGym_substitutions", "DMS_total_number_mutants",
            "ProteinGym's substitution assays, every variant (multiple mutants too), without folds",
            "3a83766254ac9ac9984ec25cb73c6e010ea4418f5e35f143933e6b6e6473b921", "data.proteingym_substitutions",
        ),
    )
}


ARCHIVE_KEY_PREFIX = "archive:"  # no file path a config gives starts so


def archive_assay_key(archive: str, dms_id: str) -> str:
    """The data key of an assay staged from a released archive: ``archive:{archive}/{DMS_id}.csv``."""
    return f"{ARCHIVE_KEY_PREFIX}{archive}/{dms_id}.csv"


def is_archive_assay_key(value: str) -> bool:
    archive, _, filename = value.removeprefix(ARCHIVE_KEY_PREFIX).partition("/")
    return value.startswith(ARCHIVE_KEY_PREFIX) and archive in PROTEINGYM_ARCHIVES and filename.endswith(".csv") and "/" not in filename


def is_data_key(value: str) -> bool:
    """A task file value the workflow puts under results/data: a pinned file key or an archive's assay."""
    return value in PINNED_FILES or is_archive_assay_key(value)


def data_key_path(value: str) -> str:
    """Where under results/data a data key's file is put: a pinned file at its key, an archive's assay at ``archives/{archive}/{DMS_id}.csv``."""
    return f"archives/{value.removeprefix(ARCHIVE_KEY_PREFIX)}" if is_archive_assay_key(value) else value
