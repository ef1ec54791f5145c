"""The official files behind the benchmark tasks: where each comes from and its sha256.

Invariant: a file key (``deeploc/deeploc_test_set.fasta``) names one immutable file: a git blob
at a fixed commit of a public repository, with its sha256. ``stage`` puts that exact file at a
destination, either downloaded (from GitHub or a mirror laid out by key) or taken from a
directory of pre-staged copies laid out by key, and in both cases only after the hash matched.
Only the standard library is used, so the workflow can read this table while building the DAG.
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
class OfficialFile:
    repo: str
    commit: str
    path: str  # inside the repository
    sha256: str
    dms_id: str | None = None  # ProteinGym assays: the DMS_id of the reference table

    @property
    def url(self) -> str:
        return f"{RAW_GITHUB}/{self.repo}/{self.commit}/{self.path}"


# Keys follow the layout of a staged copy (the same as ../shared/data, see its PROVENANCE.md).
OFFICIAL_FILES: dict[str, OfficialFile] = {
    "proteingym/reference_files/DMS_substitutions.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "reference_files/DMS_substitutions.csv", "a8f498011532a74aa9fe556a50555a75e928c5837d19c06a87592ae04049b308"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv", "343d662819218abaf7c74f81dc46677237178b4c1cb4b81e7ff38daa921b5035"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_random_5.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_random_5.csv", "9ec9288d0f5e1530f90403d8070e4203501aa2a8aedbb6100b7499c5623e8e7c"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_modulo_5.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_modulo_5.csv", "4a4e97c3359172f20612248790c2dab918113e33f70d9f0cb95cac6abc8b30ac"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_contiguous_5.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level_fold_contiguous_5.csv", "94f0c739b3dd55a83513929ec0aa9ab039bb69dadc53772df419bee6807b2bd8"),
    "proteingym/benchmarks/DMS_supervised/substitutions/Spearman/Summary_performance_DMS_substitutions_Spearman.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_supervised/substitutions/Spearman/Summary_performance_DMS_substitutions_Spearman.csv", "1672851e72d2352bfc8b0f3c0ffe0bf7d98f2ee91f0ba1ae8fa1ed3b7ee7a944"),
    "proteingym/benchmarks/DMS_zero_shot/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv": OfficialFile("OATML-Markslab/ProteinGym", "bb685245f8f4bb95a5b54b470396c23826cd6284", "benchmarks/DMS_zero_shot/substitutions/Spearman/DMS_substitutions_Spearman_DMS_level.csv", "f432423b87f79ac9778dfac86e3d95be041d246bc618dc0a406b35b0b7466437"),
    "proteingym/cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv": OfficialFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/BLAT_ECOLX_Stiffler_2015.csv", "88ffc2fe1278a16b07e284ef0b8d9b7b64682dd96b6f71f0bb7e77bbac878d0d", dms_id="BLAT_ECOLX_Stiffler_2015"),
    "proteingym/cv_folds_singles_substitutions/GFP_AEQVI_Sarkisyan_2016.csv": OfficialFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/GFP_AEQVI_Sarkisyan_2016.csv", "1c65e7c62dcca0f061af2acc96b704bc7a9d8f6841043ce0f8892e7cce51d3f7", dms_id="GFP_AEQVI_Sarkisyan_2016"),
    "proteingym/cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv": OfficialFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/A0A1I9GEU1_NEIME_Kennouche_2019.csv", "15d449410abb4040d29f7e2b25a4de9318d61d6bb0a7f81f97a368d02d83aa48", dms_id="A0A1I9GEU1_NEIME_Kennouche_2019"),
    "proteingym/cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv": OfficialFile("petergroth/kermut", "35a65ff383eda041f1348287ca0b8c9f7200919b", "data/processed/proteingym_cv_folds_singles_substitutions/DNJA1_HUMAN_Rocklin_2023_2LO1.csv", "c4da70fa57f6898f9df5e0622661e07f8057fa30bf783540a40f93dd1b9c926b", dms_id="DNJA1_HUMAN_Tsuboyama_2023_2LO1"),
    "proteingym/pkermut_datasets/RASK_HUMAN_Weng_2022_binding-DARPin_K55.csv": OfficialFile("florisvdf/PKermut", "67f8bbe00d3423513b6f4c7f339e9c9625f884c6", "tests/data/datasets/RASK_HUMAN_Weng_2022_binding-DARPin_K55.csv", "954fed91a2a2d9670531fa987067c2b6b50c163b4e7e0d8463fa8d1c7c0275f4", dms_id="RASK_HUMAN_Weng_2022_binding-DARPin_K55"),
    "proteingym/pkermut_datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv": OfficialFile("florisvdf/PKermut", "67f8bbe00d3423513b6f4c7f339e9c9625f884c6", "tests/data/datasets/TCRG1_MOUSE_Tsuboyama_2023_1E0L.csv", "93db0e16a0306c627804f0b501c959cd8c0e94dac992ddc9efb300b26fd8e5c9", dms_id="TCRG1_MOUSE_Tsuboyama_2023_1E0L"),
    "proteingym/single_site_mutant_score/NUD15_HUMAN_Suiter_2020.csv": OfficialFile("ginnm/SingleSiteProteinGYM", "9844690432e30a6fc0d79b29a03822787405e20a", "gym_single/mutant/NUD15_HUMAN_Suiter_2020.csv", "aa760a2aecc3de9fdc05053c2d0d465509d45260631a5fe395874da96ea23c3b", dms_id="NUD15_HUMAN_Suiter_2020"),
    "deeploc/deeploc_test_set.fasta": OfficialFile("HannesStark/protein-localization", "7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b", "data_files/deeploc_test_set.fasta", "b4d4fb4dbf53e87fb1bff9cbad41919c7c1f2615299a0dd50ecb5a4d002b4b6a"),
    "deeploc/deeploc_our_val_set.fasta": OfficialFile("HannesStark/protein-localization", "7b0be1e64a91db8ad1a8feae994a4d09aa9d7b1b", "data_files/deeploc_our_val_set.fasta", "5fddf9a7c076c7a0c34e46bdf8a530fddb8cd17a54b28d8e7ebcf3d4fbbf77d6"),
    "deepfri_ec/nrPDB-EC_2020.04_annot.tsv": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_annot.tsv", "79e429e2efe9f8a9ad973ddb27c1ba1425f2b6aa1989fb01fe10f65a84899ed1"),
    "deepfri_ec/nrPDB-EC_2020.04_test_sequences.fasta": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test_sequences.fasta", "04500f04863d274e8b226d42d555483060cc5541e28801a8000d814efea49873"),
    "deepfri_ec/nrPDB-EC_2020.04_test.csv": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test.csv", "3cbaef7f4c022519c2f57d021ee84b6d2c342459525aec25ed056a7c2b9ad209"),
    "deepfri_ec/nrPDB-EC_2020.04_train.txt": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_train.txt", "5b674928876400203c6eb1e96250b951676024f17b2cfecf48de4f822a2606db"),
    "deepfri_ec/nrPDB-EC_2020.04_valid.txt": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_valid.txt", "2630c4d46fc35965979b57bfc1476f5cc3da17ac227c8beca9e12a3d1caf6fc2"),
    "deepfri_ec/nrPDB-EC_2020.04_test.txt": OfficialFile("flatironinstitute/DeepFRI", "3bd6c7eae67894ccedbe1117e33b3abe544bca71", "preprocessing/data/nrPDB-EC_2020.04_test.txt", "e1cfd23416673a9f594ee4c1f01c03f463baeb52ea1310f7d4b87868a28ccafe"),
    "deepsol/val_src": OfficialFile("sameerkhurana10/DSOL_rv0.2", "9cc5da72f1cf3f46350470a06a4d04abbf171f32", "data/val_src", "4b869b7ae014fc490930cee5a36284a8e7dbe80eefcb90e280378a052c64eda4"),
    "deepsol/val_tgt": OfficialFile("sameerkhurana10/DSOL_rv0.2", "9cc5da72f1cf3f46350470a06a4d04abbf171f32", "data/val_tgt", "0b2bb65e082bf9cbeb9b46cd917aa417511075404d77f491ed9afd7112e71227"),
    "flip_gb1/splits.zip": OfficialFile("J-SNACKKB/FLIP", "62cace8735f5610e2743cf06ce0f944b37fffaa6", "splits/gb1/splits.zip", "00a3c3d5be56ce35adfbec838db8ff549be369525e151a6978133da34b9fd86f"),
    "flip_gb1/5LDE_1.fasta": OfficialFile("J-SNACKKB/FLIP", "62cace8735f5610e2743cf06ce0f944b37fffaa6", "splits/gb1/5LDE_1.fasta", "0316a39393885ff3337c43fd885286d0d1517b8c26d6bf03572893298005d03b"),
}


def proteingym_assay_key(dms_id: str) -> str | None:
    """The official file key holding a ProteinGym assay, or None when none is registered."""
    for key, official in OFFICIAL_FILES.items():
        if official.dms_id == dms_id:
            return key
    return None


def stage(key: str, out: str | Path, local_dir: str | Path | None = None, base_url: str | None = None) -> str:
    """Put the official file ``key`` at ``out``, hash-verified; returns its sha256.

    With ``local_dir`` the file is copied from ``local_dir/key`` and nothing is downloaded;
    otherwise it is downloaded from ``base_url/key`` when a mirror is given, else from its
    repository on GitHub. A copy, not a link: a hard link shares the local copy's inode, whose
    change time moves whenever anything else links it, and Snakemake would take that for an
    updated input and redo every step downstream.
    """
    if key not in OFFICIAL_FILES:
        raise DownloadError(f"{key!r} is not an official file; known files: {', '.join(sorted(OFFICIAL_FILES))}")
    official = OFFICIAL_FILES[key]
    if local_dir is None:
        url = f"{base_url.rstrip('/')}/{key}" if base_url else official.url
        return download(url, out, official.sha256)
    source = Path(local_dir) / key
    if not source.is_file():
        raise DownloadError(f"{source} does not exist; stage {key} in data.local_dir {local_dir} or unset data.local_dir to download it")
    with atomic_path(out) as tmp:
        shutil.copyfile(source, tmp)
        found = sha256_file(tmp)  # the bytes that will be used, not the source, which could change meanwhile
        if found != official.sha256:
            raise DownloadError(f"{source}: sha256 is {found}, expected {official.sha256}; the local copy is not the official file, replace it")
    log.info("staged %s from %s (sha256 %s)", key, source, found)
    return found
