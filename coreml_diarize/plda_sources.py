"""Seeded random PLDA files in pyannote's own format (`xvec_transform.npz`, `plda.npz`).

pyannote's VBx clustering (`pyannote.audio.core.plda.PLDA`, `utils.vbx.vbx_setup`) reads two
files from the pipeline's `plda/` folder:

    xvec_transform.npz   mean1 (E,)   x-vector mean, subtracted before the first L2 norm
                         mean2 (L,)   mean of the LDA-projected vectors
                         lda   (E, L) LDA projection (E = embedding dim, L = LDA dim)
    plda.npz             mu    (L,)   PLDA mean
                         tr    (L, L) PLDA transform: within-class covariance W = inv(tr.T tr)
                         psi   (L,)   across-class variances in the space tr whitens
                                      (between-class covariance B = inv((tr.T / psi) tr))

(pyannote/speaker-diarization-community-1 ships E = 256, L = 128.) All arrays are float64.

The random files are calibrated to behave like a trained PLDA on speaker-like embeddings, so
VBx with the pipeline's Fa/Fb really separates speakers (neither one cluster nor singletons):

* `lda` has orthonormal columns with per-column gains in [0.5, 2]: a generic projection that
  keeps the angle structure of the embeddings (which is all pyannote's L2 norms leave).
* After pyannote's two L2 normalisations every x-vector has norm sqrt(L), i.e. unit variance
  per dimension. Embeddings of one speaker with within-speaker cosine ~0.7 (what WeSpeaker
  gives) spread with variance ~0.25 per dimension around their speaker, the rest is across
  speakers. `tr` whitens a within-class standard deviation drawn from [0.3, 0.5] (so
  W = R^T diag(sigma_w^2) R for a random rotation R), and `psi` (across/within ratio) is
  log-uniform in [1, 8], stored in random order (pyannote re-sorts it in `vbx_setup`).
  Measured with pyannote's VBxClustering (AHC + VBx, Fa=0.07, Fb=0.8) on synthetic speakers
  (validation.reference_plda.speaker_embeddings, noise 0.4-0.8, 1-8 speakers, 10-40
  embeddings each, PLDA seeds 0-4): the true number of speakers, every cluster pure, in 148
  of 150 settings (the misses: 10 embeddings per speaker at noise 0.8). With a within-class
  std of [0.4, 0.7] instead, VBx merged 6-8 speakers into 1-2.
* The means are small random offsets (norms ~1): non-zero, so an all-zero embedding is a
  regular input (x - mean1 != 0), as it is for a trained PLDA.

Ground layer: numpy only, no torch, no pyannote import.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import SourceError

TRANSFORM_FILE = "xvec_transform.npz"  # pyannote's PLDA.from_pretrained file names
PLDA_FILE = "plda.npz"

# Calibration of the random PLDA (see the module docstring).
LDA_GAIN_RANGE = (0.5, 2.0)
WITHIN_STD_RANGE = (0.3, 0.5)
PSI_RANGE = (1.0, 8.0)
MEAN_STD = 0.1  # per-dimension std of mean1, mean2, mu

CALIBRATION = (
    f"random PLDA: orthonormal LDA x gains {LDA_GAIN_RANGE}, within-class std "
    f"{WITHIN_STD_RANGE}, psi log-uniform {PSI_RANGE}, means N(0, {MEAN_STD}^2)"
)


def _orthonormal(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """A random (rows, cols) matrix with orthonormal columns (Haar, sign-fixed QR)."""
    q, r = np.linalg.qr(rng.standard_normal((rows, cols)))
    return q * np.sign(np.diag(r))


def random_plda_arrays(
    seed: int, embedding_dim: int = 256, lda_dimension: int = 128
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(xvec_transform arrays, plda arrays), float64, deterministic for `seed`."""
    if not 0 < lda_dimension <= embedding_dim:
        raise ValueError(f"need 0 < lda_dimension <= embedding_dim, got {lda_dimension}")
    rng = np.random.default_rng(seed)
    E, L = embedding_dim, lda_dimension
    gains = np.exp(rng.uniform(*np.log(LDA_GAIN_RANGE), size=L))
    lda = _orthonormal(rng, E, L) * gains
    mean1 = rng.normal(0.0, MEAN_STD, size=E)
    mean2 = rng.normal(0.0, MEAN_STD, size=L)
    within_std = rng.uniform(*WITHIN_STD_RANGE, size=L)
    tr = (1.0 / within_std)[:, None] * _orthonormal(rng, L, L).T  # diag(1/sigma_w) R
    psi = np.exp(rng.uniform(*np.log(PSI_RANGE), size=L))
    mu = rng.normal(0.0, MEAN_STD, size=L)
    transform = {"mean1": mean1, "mean2": mean2, "lda": lda}
    plda = {"mu": mu, "tr": tr, "psi": psi}
    return transform, plda


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """`np.savez` with fixed zip timestamps, so equal arrays give byte-identical files.

    (np.savez stamps every member with the current time.) Each member is `<key>.npy` in
    numpy's own .npy format, which is all `np.load` needs.
    """
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)


def random_plda_files(
    directory: str | Path, seed: int, embedding_dim: int = 256, lda_dimension: int = 128
) -> tuple[Path, Path]:
    """Write seeded random `xvec_transform.npz` and `plda.npz` into `directory`.

    The layout is the one `PLDA.from_pretrained(directory)` loads; the files are
    byte-identical for a seed. Returns (transform path, plda path).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    transform, plda = random_plda_arrays(seed, embedding_dim, lda_dimension)
    transform_path, plda_path = directory / TRANSFORM_FILE, directory / PLDA_FILE
    write_npz(transform_path, transform)
    write_npz(plda_path, plda)
    return transform_path, plda_path


def plda_files_sha256(directory: str | Path) -> str:
    """One digest of the two files' arrays (names, dtypes, shapes, bytes), in a fixed order.

    Hashes the arrays rather than the zip containers, so it identifies the PLDA itself.
    """
    digest = hashlib.sha256()
    for name in (TRANSFORM_FILE, PLDA_FILE):
        with np.load(Path(directory) / name) as data:
            for key in sorted(data.files):
                array = np.ascontiguousarray(data[key])
                digest.update(f"{name}:{key}:{array.dtype.str}:{array.shape};".encode())
                digest.update(array.tobytes())
    return digest.hexdigest()


# The arrays each file must hold, by symbolic shape (E: embedding dim, L: LDA dim).
EXPECTED_ARRAYS = {
    TRANSFORM_FILE: {"mean1": ("E",), "mean2": ("L",), "lda": ("E", "L")},
    PLDA_FILE: {"mu": ("L",), "tr": ("L", "L"), "psi": ("L",)},
}


def _read_npz(path: Path, keys: Mapping[str, tuple[str, ...]]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise SourceError(f"PLDA file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            present = set(data.files)
            missing = sorted(set(keys) - present)
            if missing:
                raise SourceError(
                    f"PLDA file {path} lacks {', '.join(missing)} (has {', '.join(sorted(present))})"
                )
            return {key: np.asarray(data[key]) for key in keys}
    except SourceError:
        raise
    except Exception as exc:  # not a zip, truncated, pickled objects...
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "unreadable"
        raise SourceError(f"corrupt PLDA file {path}: {detail}") from exc


def check_plda_files(directory: str | Path) -> tuple[int, int]:
    """Check `xvec_transform.npz` and `plda.npz` in `directory` before pyannote loads them:
    every array present, numeric, finite, with consistent shapes, psi > 0. Returns (E, L);
    anything else is one clear SourceError (pyannote itself would fail deep inside vbx_setup,
    or silently compute NaN)."""
    directory = Path(directory)
    arrays = {name: _read_npz(directory / name, keys) for name, keys in EXPECTED_ARRAYS.items()}
    lda = arrays[TRANSFORM_FILE]["lda"]
    if lda.ndim != 2 or not 0 < lda.shape[1] <= lda.shape[0]:
        raise SourceError(
            f"PLDA file {directory / TRANSFORM_FILE}: lda must be (E, L) with 0 < L <= E, "
            f"got shape {lda.shape}"
        )
    sizes = {"E": lda.shape[0], "L": lda.shape[1]}
    for name, keys in EXPECTED_ARRAYS.items():
        for key, dims in keys.items():
            array = arrays[name][key]
            expected = tuple(sizes[d] for d in dims)
            where = f"PLDA file {directory / name}: {key}"
            if array.shape != expected:
                raise SourceError(f"{where} has shape {array.shape}, expected {expected}")
            if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
                raise SourceError(f"{where} has dtype {array.dtype}, expected real numbers")
            if not np.all(np.isfinite(array)):
                raise SourceError(f"{where} holds NaN or infinite values")
    if not np.all(arrays[PLDA_FILE]["psi"] > 0):
        raise SourceError(f"PLDA file {directory / PLDA_FILE}: psi must be positive")
    return sizes["E"], sizes["L"]
