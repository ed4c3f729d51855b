"""Contrastive losses for BEN embeddings."""

from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MultiViewNTXentLoss"]


class MultiViewNTXentLoss(nn.Module):
    r"""Normalised temperature-scaled cross entropy over K views (K-view NT-Xent).

    Rows of ``z`` that share an id are views of one unit (a sample or a bag)
    and are positives of one another; every other row is a negative. With
    :math:`s_{ij}` the cosine similarity of rows ``i`` and ``j``, :math:`P(i)`
    the other rows with the id of row ``i`` and :math:`K_i = |P(i)| + 1`, the
    loss of row ``i`` is (Lin & Lu, Appendix C.3, Eq. 2)

    .. math::

        \ell_i = -\frac{1}{K_i - 1} \sum_{p \in P(i)} \frac{s_{ip}}{\tau}
                 + \log \sum_{j \neq i} \exp\left(\frac{s_{ij}}{\tau}\right)

    and the loss is the mean of :math:`\ell_i` over rows. With two views per
    id it is SimCLR's NT-Xent. Groups may have different sizes, but every
    row needs at least one positive.

    Parameters
    ----------
    temperature : float, default=0.05
        Temperature :math:`\tau` dividing the similarities; must be positive.

    See Also
    --------
    sklearn_ben.augment.make_views : Builds K views per sample and their ids.

    Notes
    -----
    ``z`` is L2-normalised inside, so the loss does not depend on the scale of
    each row. The log-sum-exp skips the diagonal (a row is never its own
    negative) and is computed stably.

    References
    ----------
    .. [1] A. Lin and A. X. Lu, "Incorporating knowledge of plates in batch
       normalization improves generalization of deep learning for microscopy
       images", MLCB 2022.
    .. [2] T. Chen et al., "A simple framework for contrastive learning of
       visual representations", ICML 2020.

    Examples
    --------
    >>> import torch
    >>> from sklearn_ben.losses import MultiViewNTXentLoss
    >>> z = torch.randn(6, 8, generator=torch.Generator().manual_seed(0))
    >>> ids = torch.tensor([0, 0, 0, 1, 1, 1])  # two samples, three views each
    >>> loss = MultiViewNTXentLoss(temperature=0.5)(z, ids)
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    """

    def __init__(self, temperature: float = 0.05):
        super().__init__()
        if (
            not isinstance(temperature, Real)
            or isinstance(temperature, bool)
            or not temperature > 0
        ):
            raise ValueError(
                "temperature should be a positive float, but got "
                f"temperature={temperature!r}."
            )
        self.temperature = float(temperature)

    def forward(self, z: Tensor, ids: Tensor) -> Tensor:
        """Mean K-view NT-Xent loss of projections ``z`` with view ids ``ids``.

        Parameters
        ----------
        z : Tensor of shape (M, d)
            Projections of all views (not necessarily normalised).
        ids : Tensor of int, shape (M,)
            Unit of each row; rows with the same id are positives.

        Returns
        -------
        loss : Tensor of shape ()
        """
        self._check_inputs(z, ids)
        n_rows = z.shape[0]
        z = F.normalize(z, dim=1)  # (M, d), unit rows
        sim = z @ z.T / self.temperature  # (M, M), s_ij / tau
        eye = torch.eye(n_rows, dtype=torch.bool, device=z.device)  # (M, M)
        positive = (ids[:, None] == ids[None, :]) & ~eye  # (M, M)
        n_positive = positive.sum(dim=1)  # (M,), K_i - 1
        # Mean similarity to the positives: where() keeps the masked-out
        # entries out of the gradient.
        pos_mean = torch.where(positive, sim, 0.0).sum(dim=1) / n_positive  # (M,)
        others = sim.masked_fill(eye, float("-inf"))  # (M, M), j != i
        log_denominator = torch.logsumexp(others, dim=1)  # (M,)
        return (log_denominator - pos_mean).mean()  # ()

    def _check_inputs(self, z: Tensor, ids: Tensor) -> None:
        if z.dim() != 2:
            raise ValueError(
                "z must be a 2-d tensor of shape (n_views, n_features), but got "
                f"shape {tuple(z.shape)}; flatten the projections first."
            )
        if ids.dim() != 1 or ids.shape[0] != z.shape[0]:
            raise ValueError(
                f"ids has shape {tuple(ids.shape)} but z has {z.shape[0]} rows; "
                "pass one id per row of z."
            )
        if ids.dtype.is_floating_point or ids.dtype.is_complex:
            raise ValueError(
                f"ids must be an integer tensor, but got dtype {ids.dtype}; "
                "pass e.g. ids.long()."
            )
        _, counts = torch.unique(ids, return_counts=True)
        singles = int((counts == 1).sum())
        if singles:
            raise ValueError(
                f"{singles} of {counts.numel()} ids occur in a single row, so "
                "those rows have no positive; give every id at least two views "
                "(e.g. with sklearn_ben.augment.make_views(x, n_views=2))."
            )
