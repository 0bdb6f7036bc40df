"""plda: speaker embeddings (N, E) -> VBx features (N, lda_dimension), as pyannote computes them.

pyannote's VBx clustering (`pyannote.audio.core.plda.PLDA.__call__`, built by
`pyannote.audio.utils.vbx.vbx_setup`) maps each raw embedding x to

    x-vector transform (xvec_transform.npz: mean1, mean2, lda)
        u = sqrt(E) * l2_norm(x - mean1)                  (E = lda.shape[0])
        v = sqrt(L) * l2_norm(u @ lda - mean2)            (L = lda.shape[1])
    PLDA transform (plda.npz: mu, tr, psi, re-expressed by vbx_setup)
        fea = ((v - mu) @ tr.T)[:, :lda_dimension]

where vbx_setup replaces the file's (tr, psi) by the generalised eigenvectors / eigenvalues of
(B, W) (between- and within-class covariances), sorted by decreasing eigenvalue: `tr` then
whitens the within-class covariance and diagonalises the between-class one, and psi (its
eigenvalues) becomes VBx's Phi = psi[:lda_dimension].

The constants are pyannote's own: `pyannote_plda_constants` reads the arrays that vbx_setup's
two transform closures captured (after its eigen-decomposition), nothing is re-derived here, and
`PLDATransform.from_pyannote` checks the module against the PLDA object in float64 before
returning it. They are stored as float32 buffers.

Zero vectors and NaN: each L2 normalisation divides by max(||.||, NORM_EPS) instead of ||.||.
An all-zero embedding is an ordinary input for pyannote too (x - mean1 = -mean1 != 0), so it
gives pyannote's finite features exactly. The guard only differs from pyannote on a vector
within NORM_EPS of the point being normalised away (x ~= mean1, or u @ lda ~= mean2), where
pyannote divides 0 by 0 and returns NaN; here the normalised vector is 0 and the row's features
are finite (the features of that degenerate point). NaN inputs stay NaN (pyannote's pipeline
drops NaN embeddings before the PLDA; the Swift side must too). In fp32, ||x||^2 overflows for
row norms above ~1e19 (embedding models produce norms of order 10-100).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
from torch import nn

# Smallest norm a vector is divided by (as in post_embedding: a normal fp16 number). Real
# embeddings sit orders of magnitude away from mean1; only degenerate inputs are affected.
NORM_EPS = 1e-4

# What from_pyannote's float64 self-check tolerates (relative to the features' scale).
SELF_CHECK_RTOL = 1e-9


def pyannote_plda_constants(plda: Any) -> dict[str, Any]:
    """The float64 arrays pyannote's `PLDA` computes with, read from `vbx_setup`'s closures.

    `vbx_setup` returns two lambdas; `xvec_tf` captures (mean1, mean2, lda) as loaded from
    xvec_transform.npz, `plda_tf` captures (plda_mu, plda_tr) with plda_tr after the
    generalised eigen-decomposition and re-ordering. Reading them (rather than re-loading the npz
    and repeating the eigh) guarantees the same matrix, including eigenvector signs.
    """
    xvec = inspect.getclosurevars(plda._xvec_tf).nonlocals
    tf = inspect.getclosurevars(plda._plda_tf).nonlocals
    missing = {"mean1", "mean2", "lda"} - set(xvec) | {"plda_mu", "plda_tr"} - set(tf)
    if missing:  # pyannote changed vbx_setup: refuse rather than guess
        raise RuntimeError(f"pyannote's vbx_setup no longer captures {sorted(missing)}")
    lda = np.asarray(xvec["lda"], dtype=np.float64)
    return {
        "mean1": np.asarray(xvec["mean1"], dtype=np.float64),
        "mean2": np.asarray(xvec["mean2"], dtype=np.float64),
        "lda": lda,
        "plda_mu": np.asarray(tf["plda_mu"], dtype=np.float64),
        "plda_tr": np.asarray(tf["plda_tr"], dtype=np.float64),
        "plda_psi": np.asarray(plda._plda_psi, dtype=np.float64),
        # PLDA.__call__ passes lda_dim=self.lda_dimension; numpy's slice clips it to L
        "lda_dimension": min(int(plda.lda_dimension), lda.shape[1]),
    }


class PLDATransform(nn.Module):
    """embeddings (N, E) -> features (N, lda_dimension): pyannote's PLDA(embeddings)."""

    def __init__(
        self,
        mean1: np.ndarray,
        mean2: np.ndarray,
        lda: np.ndarray,
        plda_mu: np.ndarray,
        plda_tr: np.ndarray,
        lda_dimension: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        """float64 constants in, buffers of `dtype` out (float64 only for the self-check)."""
        super().__init__()
        embedding_dim, lda_dim = lda.shape

        def buffer(name: str, value) -> None:
            # every constant is computed in float64, rounded to `dtype` once, here
            array = np.ascontiguousarray(value, dtype=np.float64)
            self.register_buffer(name, torch.from_numpy(array).to(dtype))

        buffer("mean1", mean1)  # (E,)
        buffer("mean2", mean2)  # (L,)
        buffer("lda", lda)  # (E, L)
        buffer("plda_mu", plda_mu)  # (L,)
        # ((v - mu) @ tr.T)[:, :k] == (v - mu) @ tr[:k].T: keep only the rows that survive the
        # lda_dimension cut (the largest across-class variances), transposed once here.
        buffer("plda_tr_t", np.asarray(plda_tr, dtype=np.float64)[:lda_dimension].T)  # (L, k)
        # pyannote scales the unit vectors to norm sqrt(dim): unit variance per dimension.
        buffer("sqrt_embedding_dim", math.sqrt(embedding_dim))
        buffer("sqrt_lda_dim", math.sqrt(lda_dim))
        buffer("eps", NORM_EPS)
        self.embedding_dim = embedding_dim
        self.lda_dimension = lda_dimension
        self.metadata: dict[str, str] = {}

    @classmethod
    def from_pyannote(cls, plda: Any) -> PLDATransform:
        """From a loaded `pyannote.audio.core.plda.PLDA`; checked against it in float64."""
        c = pyannote_plda_constants(plda)
        args = (c["mean1"], c["mean2"], c["lda"], c["plda_mu"], c["plda_tr"], c["lda_dimension"])
        _check_against_pyannote(cls(*args, dtype=torch.float64).eval(), plda)
        return cls(*args).eval()

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """pyannote's l2_norm per row, x / ||x||, with the norm floored at eps (no 0/0)."""
        norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True))
        return x / torch.maximum(norm, self.eps)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        # x-vector transform: centre on the training mean, project onto the unit sphere and
        # scale to radius sqrt(E) (length carries no speaker information, direction does) ...
        u = self.unit(embeddings - self.mean1) * self.sqrt_embedding_dim
        # ... LDA down to L dimensions, centred on the projected training mean, and the same
        # length normalisation again (radius sqrt(L)).
        v = self.unit(torch.matmul(u, self.lda) - self.mean2) * self.sqrt_lda_dim
        # PLDA transform: centre on the PLDA mean and rotate into the space where the
        # within-class covariance is the identity and the across-class covariance is
        # diag(psi) (what VBx assumes), keeping the lda_dimension most discriminant axes.
        return torch.matmul(v - self.plda_mu, self.plda_tr_t)


def _check_against_pyannote(exact: PLDATransform, plda: Any) -> None:
    """The module's forward, in float64, must reproduce pyannote's PLDA on probe embeddings.

    Catches a pyannote whose transform no longer matches this forward (the closure names could
    survive a change of formula). Probes: random embeddings of the scale real ones have, and
    the all-zero embedding.
    """
    rng = np.random.default_rng(0)
    probe = rng.standard_normal((8, exact.embedding_dim)) * rng.uniform(0.1, 50.0, (8, 1))
    probe[0] = 0.0
    with torch.no_grad():
        got = exact(torch.from_numpy(probe)).numpy()
    want = plda(probe)
    scale = float(np.max(np.abs(want)))
    error = float(np.max(np.abs(got - want))) if got.shape == want.shape else math.inf
    if not error <= SELF_CHECK_RTOL * scale:
        raise RuntimeError(
            f"PLDATransform does not reproduce pyannote's PLDA: {got.shape} vs {want.shape}, "
            f"max |error| {error:.3g} (scale {scale:.3g})"
        )


def vbx_defaults() -> dict[str, Any]:
    """pyannote's VBx settings for the diarization pipeline (community-1 defaults).

    Fa, Fb and the AHC threshold are `SpeakerDiarization.default_parameters()["clustering"]`
    (the values pyannote/speaker-diarization-community-1 instantiates); max_iters is what
    `VBxClustering.__call__` passes to `cluster_vbx`; init_smoothing and epsilon are the
    defaults of `cluster_vbx` and `VBx`. pyannote 4 dropped VBx's HMM (no loopP).
    """
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.audio.utils.vbx import VBx, cluster_vbx

    clustering = SpeakerDiarization.default_parameters(None)["clustering"]
    smoothing = inspect.signature(cluster_vbx).parameters["init_smoothing"].default
    epsilon = inspect.signature(VBx).parameters["epsilon"].default
    return {
        "Fa": float(clustering["Fa"]),
        "Fb": float(clustering["Fb"]),
        "ahc_threshold": float(clustering["threshold"]),
        "ahc_linkage": "centroid",
        "ahc_metric": "euclidean distance of L2-normalised embeddings",
        "max_iters": 20,
        "init_smoothing": float(smoothing),
        "epsilon": float(epsilon),
        "speaker_prior_floor": 1e-7,  # VBxClustering keeps speakers with sp > 1e-7
        "loopP": None,
    }


def plda_parameters(plda: Any) -> dict[str, Any]:
    """What VBx needs besides the features, for a JSON file next to the .mlpackage.

    phi: VBx's Phi (across-class variances of the features, = psi[:lda_dimension], sorted
    decreasing); psi: all L eigenvalues; vbx: the pipeline's Fa/Fb/threshold and iteration
    settings (see `vbx_defaults`).
    """
    c = pyannote_plda_constants(plda)
    phi = np.asarray(plda.phi, dtype=np.float64)
    return {
        "embedding_dimension": int(c["lda"].shape[0]),
        "lda_dimension": int(c["lda_dimension"]),
        "phi": [float(p) for p in phi],
        "psi": [float(p) for p in c["plda_psi"]],
        "vbx": vbx_defaults(),
    }


def build_wrapper(ctx) -> PLDATransform:
    """For the registry: ctx.weights.model is a loaded pyannote `PLDA` (proposal)."""
    plda = ctx.weights.model
    wrapper = PLDATransform.from_pyannote(plda)
    wrapper.metadata = {
        "lda_dimension": str(wrapper.lda_dimension),
        "embedding_dimension": str(wrapper.embedding_dim),
        "norm_eps": repr(NORM_EPS),
    }
    return wrapper.eval()


# --- PldaRho: FluidAudio's offline `PldaRho` model (docs/offline_contract.md §5, §6) -----------

RHO_SCALING = "sqrt_phi"  # rho = PLDA(x) * sqrt(phi): the published PldaRho's definition (U1)


class PldaRho(nn.Module):
    """embeddings (N, E) -> rho (N, lda_dimension) = pyannote's PLDA(embeddings) * sqrt(phi).

    What FluidInference's published `PldaRho` computes (`PLDARhoModule`: fea * sqrt(phi), phi =
    pyannote's `PLDA.phi`, descending). FluidAudio's VBx then multiplies by sqrt(psi) from
    plda-parameters.json again (contract U1); this module reproduces the published model so
    that unmodified Swift code gets the same features. The input is the RAW embedding
    (pyannote's, not L2-normalised): pyannote's x-vector transform is not scale-invariant.
    """

    def __init__(self, plda: PLDATransform, phi: np.ndarray) -> None:
        super().__init__()
        phi = np.asarray(phi, dtype=np.float64)
        if phi.shape != (plda.lda_dimension,) or not np.all(phi > 0):
            raise ValueError(f"phi must be {plda.lda_dimension} positive values, got {phi.shape}")
        self.plda = plda
        # sqrt in float64, rounded to float32 once
        self.register_buffer("sqrt_phi", torch.from_numpy(np.sqrt(phi)).to(plda.lda.dtype))
        self.embedding_dim = plda.embedding_dim
        self.lda_dimension = plda.lda_dimension
        self.metadata: dict[str, str] = {}

    @classmethod
    def from_pyannote(cls, plda: Any) -> PldaRho:
        """From a loaded pyannote `PLDA` (the transform is checked against it in float64)."""
        return cls(PLDATransform.from_pyannote(plda), np.asarray(plda.phi)).eval()

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.plda(embeddings) * self.sqrt_phi


def _tensor_entry(values: np.ndarray) -> dict[str, Any]:
    """One entry of FluidAudio's `tensors` map: float32, little-endian, C order, base64."""
    import base64

    array = np.ascontiguousarray(values, dtype="<f4")
    return {
        "shape": list(array.shape),
        "dtype": "float32",
        "byte_order": "little-endian",
        "layout": "row-major",
        "data_base64": base64.b64encode(array.tobytes()).decode("ascii"),
    }


def plda_parameters_file(plda: Any, provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """`plda-parameters.json` for FluidAudio's offline diarizer, plus our VBx parameters.

    FluidAudio (`OfflineDiarizerModels.loadPLDAPsi`) reads only `tensors.psi.data_base64`:
    little-endian float32 values used as VBx's Phi, which must be exactly as many as rho's
    columns. We write psi := pyannote's `PLDA.phi` (vbx_setup's eigenvalues, descending,
    [:lda_dimension]): the values rho's dimensions are aligned with (contract §6, U3).
    `mu` and `tr` are the PLDA mean and the re-expressed transform vbx_setup computed (rows in
    the same order as psi), in the same schema; FluidAudio ignores them. The rest (phi in
    float64, Fa/Fb/threshold, rho_scaling, ...) is this toolkit's `plda_parameters`.
    """
    c = pyannote_plda_constants(plda)
    phi = np.asarray(plda.phi, dtype=np.float64)
    out: dict[str, Any] = {
        "name": "plda_parameters",
        "description": (
            "PLDA parameters for VBx clustering: tensors.psi = pyannote PLDA.phi (descending"
            " eigenvalues, aligned with PldaRho's rho columns)"
        ),
        "tensors": {
            "psi": _tensor_entry(phi),
            "mu": _tensor_entry(c["plda_mu"]),
            "tr": _tensor_entry(c["plda_tr"]),
        },
        "psi_is": "phi",  # not the npz's raw psi (which pyannote re-sorts)
        "rho_scaling": RHO_SCALING,
        **plda_parameters(plda),
    }
    if provenance:
        out["source"] = dict(provenance)
    return out


def plda_parameters_sidecar(ctx) -> dict[str, Any]:
    """For the registry's `plda-rho` model: the content of `plda-parameters.json` (FluidAudio's
    ModelNames.OfflineDiarizer name), written beside PldaRho."""
    provenance = getattr(ctx.weights, "provenance", None)
    provenance = provenance.as_metadata() if provenance is not None else None
    return plda_parameters_file(ctx.weights.model, provenance)


def build_rho_wrapper(ctx) -> PldaRho:
    """For the registry's `plda-rho` model: ctx.weights.model is a loaded pyannote `PLDA`."""
    wrapper = PldaRho.from_pyannote(ctx.weights.model)
    wrapper.metadata = {
        "lda_dimension": str(wrapper.lda_dimension),
        "embedding_dimension": str(wrapper.embedding_dim),
        "norm_eps": repr(NORM_EPS),
        "rho_scaling": RHO_SCALING,
    }
    return wrapper.eval()
