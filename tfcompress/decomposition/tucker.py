"""Partial Tucker decomposition of a kernel over its two channel modes, with a sparse residual.

A kernel K of shape (k…, C_in, C_out) (a Dense kernel has no spatial modes) is approximated as

    K ≈ G ×_in U_in ×_out U_out + S

with G the core (k…, r_in, r_out), U_in (C_in, r_in) and U_out (C_out, r_out) orthonormal factors (Tucker 1966;
fitted by HOOI, De Lathauwer, De Moor & Vandewalle 2000, through tensorly's ``partial_tucker``), and S a sparse
residual holding the entries the low-rank part fits worst, exactly (tf-hybrid-pruning's
``partial_tucker_spar``, REFERENCE.md §3.1): the entries of largest |K| are set aside before fitting, then after
every HOOI sweep the residual |K̂ − K| is reduced by the pruning :class:`Structure`, the largest ``density`` %
are taken into S, and the fit continues on K with those entries imputed by K̂. Finally S = K − K̂ on them.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np
from tensorly.decomposition import partial_tucker
from tensorly.tenalg import multi_mode_dot
from threadpoolctl import threadpool_limits

STRUCTURE_NAMES = ("unstructured", "filter", "channel", "block_AxB")


@dataclasses.dataclass(frozen=True)
class Structure:
    """Which entries of the sparse residual S are kept together (REFERENCE.md §3.1, ``src/structures.py``).

    ``unstructured``: any entry; ``filter``: an entry (k…, c_in) for every output channel at once; ``channel``:
    an entry (k…, c_out) for every input channel at once; ``block_AxB``: blocks of A input × B output channels
    at one kernel position. Entries are ranked by the mean |residual| over what they keep together.
    """

    name: str = "unstructured"
    block: tuple[int, int] = (1, 1)

    @classmethod
    def parse(cls, name: str) -> Structure:
        match = re.fullmatch(r"block_(\d+)x(\d+)", name)
        if match:
            block = (int(match[1]), int(match[2]))
            if min(block) < 1:
                raise ValueError(f"structure {name!r}: block sizes must be ≥ 1")
            return cls("block", block)
        if name not in ("unstructured", "filter", "channel"):
            raise ValueError(f"unknown structure {name!r}; use one of {', '.join(STRUCTURE_NAMES)} "
                             "(e.g. block_8x8)")
        return cls(name)

    @property
    def label(self) -> str:
        return f"block_{self.block[0]}x{self.block[1]}" if self.name == "block" else self.name

    def check(self, kernel_shape: tuple[int, ...], layer: str) -> None:
        """A ValueError naming ``layer`` when its kernel cannot be cut into this structure's blocks."""
        c_in, c_out = kernel_shape[-2:]
        if self.name == "block" and (c_in % self.block[0] or c_out % self.block[1]):
            raise ValueError(
                f"layer {layer!r}: structure {self.label} needs channel counts divisible by the block, got "
                f"C_in={c_in}, C_out={c_out}; choose a block size that divides them or another structure"
            )

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Mean of ``values`` (shaped like the kernel) over each group of entries kept together."""
        if self.name == "filter":
            return values.mean(axis=-1)
        if self.name == "channel":
            return values.mean(axis=-2)
        if self.name == "block":
            *spatial, c_in, c_out = values.shape
            b_in, b_out = self.block
            return values.reshape(*spatial, c_in // b_in, b_in, c_out // b_out, b_out).mean(axis=(-3, -1))
        return values

    def expand(self, reduced: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """The inverse of :meth:`reduce` for a mask: each group's value on all its entries."""
        if self.name == "filter":
            return np.broadcast_to(reduced[..., None], shape)
        if self.name == "channel":
            return np.broadcast_to(reduced[..., None, :], shape)
        if self.name == "block":
            b_in, b_out = self.block
            return np.repeat(np.repeat(reduced, b_in, axis=-2), b_out, axis=-1)
        return reduced

    def largest(self, values: np.ndarray, density_percent: float) -> np.ndarray:
        """Boolean mask of the groups with the largest mean ``values``: ``density_percent`` % of the entries."""
        reduced = self.reduce(values)
        count = round(density_percent / 100.0 * reduced.size)
        mask = np.zeros(reduced.size, bool)
        if count > 0:
            mask[np.argpartition(reduced.ravel(), reduced.size - count)[reduced.size - count:]] = True
        return self.expand(mask.reshape(reduced.shape), values.shape)


@dataclasses.dataclass
class TuckerFactors:
    """K ≈ core ×_in u_in ×_out u_out + sparse (see the module docstring)."""

    core: np.ndarray  # (k…, r_in, r_out)
    u_in: np.ndarray  # (C_in, r_in)
    u_out: np.ndarray  # (C_out, r_out)
    sparse: np.ndarray | None = None  # (k…, C_in, C_out), zero outside its ``density`` % of entries

    @property
    def ranks(self) -> tuple[int, int]:
        return self.core.shape[-2], self.core.shape[-1]

    def low_rank(self) -> np.ndarray:
        modes = (self.core.ndim - 2, self.core.ndim - 1)
        return multi_mode_dot(self.core, [self.u_in, self.u_out], modes=modes)

    def kernel(self) -> np.ndarray:
        """The kernel the factors compute with."""
        low_rank = self.low_rank()
        return low_rank if self.sparse is None else low_rank + self.sparse

    @property
    def nonzero_sparse(self) -> int:
        return 0 if self.sparse is None else int(np.count_nonzero(self.sparse))


def sparse_partial_tucker(
    kernel: np.ndarray,
    ranks: tuple[int, int],
    density_percent: float = 0.0,
    structure: Structure = Structure(),
    *,
    n_iter_max: int = 100,
    tol: float = 1e-4,
) -> TuckerFactors:
    """Factors ``kernel`` (k…, C_in, C_out) into a rank-(r_in, r_out) Tucker part plus a sparse residual of
    ``density_percent`` % of its entries (0: no residual), chosen under ``structure``.

    Stops after ``n_iter_max`` sweeps or when the relative error ‖K − K̂ − S‖/‖K‖ changes by less than ``tol``.
    """
    r_in, r_out = ranks
    c_in, c_out = kernel.shape[-2:]
    if not (1 <= r_in <= c_in and 1 <= r_out <= c_out):
        raise ValueError(f"ranks {ranks} must be in [1, C_in={c_in}] × [1, C_out={c_out}]")
    if not 0.0 <= density_percent <= 100.0:
        raise ValueError(f"density_percent must be in [0, 100], got {density_percent}")
    # Kernels are small: BLAS threads only add overhead, 10–20× on a busy 2-core host.
    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(np.asarray(kernel, np.float64), ranks, density_percent, structure, n_iter_max, tol)


def _fit(target: np.ndarray, ranks: tuple[int, int], density_percent: float, structure: Structure,
         n_iter_max: int, tol: float) -> TuckerFactors:
    r_in, r_out = ranks
    modes = [target.ndim - 2, target.ndim - 1]
    if density_percent == 0.0:
        (core, (u_in, u_out)), _ = partial_tucker(target, [r_in, r_out], modes=modes, n_iter_max=n_iter_max,
                                                  tol=tol)
        return TuckerFactors(core, u_in, u_out)

    norm = np.linalg.norm(target) or 1.0
    in_sparse = structure.largest(np.abs(target), density_percent)  # the reference's first guess: largest |K|
    tucker: tuple | str = "svd"
    errors: list[float] = []
    for _ in range(n_iter_max):
        # One HOOI sweep on K with the entries S will hold imputed by the current K̂ (tensorly's mask: 0 = missing).
        tucker, _ = partial_tucker(np.where(in_sparse, 0.0, target), [r_in, r_out], modes=modes, n_iter_max=1,
                                   init=tucker, mask=(~in_sparse).astype(np.float64), tol=0)
        low_rank = multi_mode_dot(tucker[0], tucker[1], modes=modes)
        residual = np.abs(target - low_rank)
        in_sparse = structure.largest(residual, density_percent)
        errors.append(float(np.linalg.norm(np.where(in_sparse, 0.0, residual)) / norm))
        if len(errors) > 2 and abs(errors[-2] - errors[-1]) < tol:
            break
    core, (u_in, u_out) = tucker
    sparse = np.where(in_sparse, target - low_rank, 0.0)
    return TuckerFactors(core, u_in, u_out, sparse)


def magnitude_sparse(kernel: np.ndarray, density_percent: float, structure: Structure = Structure()) -> np.ndarray:
    """Rank 0 of the reference: the kernel's ``density_percent`` % largest entries (under ``structure``)."""
    target = np.asarray(kernel, np.float64)
    return np.where(structure.largest(np.abs(target), density_percent), target, 0.0)


def relative_error(kernel: np.ndarray, approximation: np.ndarray) -> float:
    """‖K − K̂‖ / ‖K‖ (0 for an all-zero kernel approximated exactly)."""
    norm = float(np.linalg.norm(kernel))
    diff = float(np.linalg.norm(np.asarray(kernel, np.float64) - approximation))
    return diff / norm if norm else diff

