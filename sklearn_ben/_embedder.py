"""BENEmbedder: self-supervised or supervised embeddings with BEN."""

from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from torch import Tensor, nn

from sklearn_ben._base import NORMS, BENBase
from sklearn_ben._data import BatchDataset
from sklearn_ben._nets import HeadNet, seeded
from sklearn_ben._sklearn_compat import HasMethods, Interval, StrOptions, _fit_context
from sklearn_ben._validation import _plain, check_labels
from sklearn_ben.exceptions import GroupError
from sklearn_ben.samplers import KeyedBatchSampler, batch_generators

__all__ = ["BENEmbedder"]


def _projection_head(n_features: int, dim: int) -> nn.Module:
    """The paper's two-layer projection head (SimCLR's)."""
    return nn.Sequential(
        nn.Linear(n_features, n_features),
        nn.ReLU(inplace=True),
        nn.Linear(n_features, dim),
    )


def _feature_noise(x: Tensor, generator: torch.Generator) -> Tensor:
    """Views of feature rows: 20% feature dropout plus small Gaussian noise."""
    keep = torch.rand(x.shape, generator=generator) > 0.2
    noise = torch.randn(x.shape, generator=generator) * 0.1
    return x * keep / 0.8 + noise * x.std(dim=0, keepdim=True).clamp_min(1e-6)


class _ViewDataset(BatchDataset):
    """Builds K views of each unit of a batch, with ids for the loss.

    A unit is a sample or a bag. With ``distinct`` (MinCLR) the views of a bag
    are K different samples of it, drawn without replacement (a bag smaller
    than K gives all its samples, then repeats, which the augmentation makes
    different); otherwise (SimCLR) they are K copies of one sample drawn from
    the unit, which the augmentation then makes different.

    Items are ``(key, units)`` from a :class:`KeyedBatchSampler`: every random
    draw comes from generators derived from the batch key, never from state
    held here, so DataLoader workers do not replay one stream.
    """

    def __init__(self, X, controls, *, members, n_views, augment, distinct):
        super().__init__(X, None, controls)
        self.members = members  # unit -> array of sample indices
        self.n_views = n_views
        self.distinct = distinct
        self.augment = augment

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, keyed):
        key, units = keyed
        rng, generator = batch_generators(key)
        rows, ids = [], []
        for uid, unit in enumerate(units):
            rows.append(self._pick(self.members[int(unit)], rng))
            ids.append(np.full(self.n_views, uid))
        rows, ids = np.concatenate(rows), np.concatenate(ids)
        x = self.get_inputs(rows)  # (B*K, ...)
        if self.augment is not None:
            x = self._augment(x, generator)
        inputs = {"X": x}
        if self.controls is not None:
            inputs["controls"] = torch.from_numpy(self.controls[rows])
        return inputs, torch.from_numpy(ids)

    def _pick(self, pool: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.distinct or len(pool) == 1:
            return np.repeat(rng.choice(pool, 1), self.n_views)
        if len(pool) >= self.n_views:
            return rng.choice(pool, self.n_views, replace=False)
        extra = rng.choice(pool, self.n_views - len(pool), replace=True)
        return np.concatenate([rng.permutation(pool), extra])

    def _augment(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() == 2:
            return _feature_noise(x, generator)
        return self.augment(x, generator=generator)


class BENEmbedder(BENBase):
    """Learn plate-robust embeddings with batch effects normalization (BEN).

    A transformer: ``fit`` trains a backbone, ``transform`` returns its
    features (N, D) computed with group-wise batch normalisation (the same
    ``sampling`` and ``norm`` choices and defaults as
    :class:`~sklearn_ben.BENClassifier`). Training heads are discarded.

    Parameters
    ----------
    module : str, backbone or torch.nn.Module, default="cnn"
        The backbone, as in :class:`~sklearn_ben.BENClassifier`.
    method : {"simclr", "minclr", "supervised"}, default="simclr"
        ``"simclr"``: the views of a sample are ``n_views`` random
        augmentations of it. ``"minclr"``: the views are ``n_views`` different
        samples of the same bag (e.g. cell crops of one image), drawn without
        replacement; needs ``bags=`` in fit. A bag with fewer than
        ``n_views`` samples is refused unless ``augment`` is given (its
        samples then repeat, and the augmentation makes the repeats differ).
        ``"supervised"``: a classification head on ``y`` (the paper's
        supervised single-cell baseline).
    n_views : int, default=5
        Views per sample (K) for the contrastive methods.
    temperature : float, default=0.05
        Temperature of :class:`~sklearn_ben.losses.MultiViewNTXentLoss`.
    projection_dim : int, default=128
        Output size of the two-layer projection head.
    augment : callable or None, default=None
        ``augment(x, generator=...)`` returning one augmented view of each
        image of a float batch (N, C, H, W). None uses
        :class:`~sklearn_ben.augment.MicroscopyAugment` for ``"simclr"`` and
        no augmentation for ``"minclr"`` (its views are different cells).
        Feature tables get feature dropout and Gaussian noise.
    sampling : {"group", "random"}, default="group"
        Training batches from one plate each, or at random.
    norm : {"group", "controls", "frozen"}, default="group"
        Source of batch-norm statistics, as in BENClassifier.
    batch_size : int, default=75
        Samples (or bags) per training batch, each giving ``n_views`` views.
    max_epochs : int, default=30
        Training epochs.
    lr : float, default=1e-3
        Peak learning rate of Adam.
    weight_decay : float, default=1e-5
        Adam's weight decay.
    warmup_epochs : int or "auto", default="auto"
        Linear warm-up epochs before cosine annealing ("auto":
        ``max_epochs // 9``).
    min_controls : int, default=2
        With ``norm="controls"``, least number of controls per training batch.
    predict_batch_size : int or None, default=None
        Largest number of samples per forward pass in ``transform``; outputs
        are those of the whole plate whatever the value.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        "auto" uses CUDA when available.
    num_workers : int, default=0
        DataLoader workers building training views.
    precision : {"float32", "bfloat16"}, default="float32"
        "bfloat16" runs forward passes (training and inference) under
        ``torch.autocast`` in bfloat16 (mixed precision: faster on recent GPUs);
        batch-norm statistics and the loss stay in float32.
    random_state : int, RandomState instance or None, default=None
        Seeds weights, sampling and augmentations.
    verbose : int, default=0
        0: silent; 1: epoch table; 2: also a progress bar.

    Attributes
    ----------
    net_ : skorch.NeuralNet
        The trained network (``net_.module_.backbone`` is the embedder).
    n_features_in_ : int
        Features (or image channels) seen in fit.
    input_shape_ : tuple
        Shape of one sample seen in fit.
    n_features_out_ : int
        Embedding dimension D.
    classes_ : ndarray
        Classes of ``y`` (``method="supervised"`` only).
    device_ : str
        Device the network was trained on.
    plate_statistics_ : dict
        ``{plate: {layer_name: (mean, var)}}``: batch-norm statistics kept by
        :meth:`adapt` (CPU tensors); empty after ``fit``.
    adapted_groups_ : ndarray
        Labels of the adapted plates, whose samples are predicted with their
        stored statistics, one sample at a time if need be.
    adapted_norm_ : str or None
        The ``norm`` the stored statistics were computed for.

    See Also
    --------
    BENClassifier : The supervised classifier.
    sklearn_ben.losses.MultiViewNTXentLoss : The K-view contrastive loss.

    References
    ----------
    .. [1] A. Lin and A. X. Lu, "Incorporating knowledge of plates in batch
       normalization improves generalization of deep learning for microscopy
       images", 2022.

    Examples
    --------
    >>> from sklearn_ben import BENEmbedder
    >>> from sklearn_ben.datasets import make_plates
    >>> data = make_plates(n_plates=2, n_samples_per_plate=24, image_size=16,
    ...                    random_state=0)
    >>> emb = BENEmbedder(n_views=2, max_epochs=1, random_state=0)
    >>> emb.fit_transform(data.X, groups=data.groups).shape
    (48, 64)
    """

    _parameter_constraints = {
        **{
            k: v
            for k, v in BENBase._parameter_constraints.items()
            if k not in ("validation_fraction", "n_iter_no_change")
        },
        "method": [StrOptions({"simclr", "minclr", "supervised"})],
        "n_views": [Interval(Integral, 2, None, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "projection_dim": [Interval(Integral, 1, None, closed="left")],
        "augment": [None, callable, HasMethods(["__call__"])],
    }

    __metadata_request__fit = {"groups": True, "controls": True, "bags": True}

    # contrastive training has no held-out scoring
    validation_fraction = None
    n_iter_no_change = None

    def __init__(
        self,
        *,
        module="cnn",
        method="simclr",
        n_views=5,
        temperature=0.05,
        projection_dim=128,
        augment=None,
        sampling="group",
        norm="group",
        batch_size=75,
        max_epochs=30,
        lr=1e-3,
        weight_decay=1e-5,
        warmup_epochs="auto",
        min_controls=2,
        predict_batch_size=None,
        device="auto",
        num_workers=0,
        precision="float32",
        random_state=None,
        verbose=0,
    ):
        self.module = module
        self.method = method
        self.n_views = n_views
        self.temperature = temperature
        self.projection_dim = projection_dim
        self.augment = augment
        self.sampling = sampling
        self.norm = norm
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.min_controls = min_controls
        self.predict_batch_size = predict_batch_size
        self.device = device
        self.num_workers = num_workers
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, *, groups=None, controls=None, bags=None):
        """Train the backbone on plate-homogeneous batches.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Images (e.g. single-cell crops) or a feature table; a torch
            ``Dataset`` of images is read lazily.
        y : array-like of shape (n_samples,), default=None
            Classes; used by ``method="supervised"`` only.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask; needed with ``norm="controls"``.
        bags : array-like of shape (n_samples,), default=None
            Source image (or well) of each sample; needed by
            ``method="minclr"``. With ``"simclr"``, an epoch then draws one
            crop per image, as in the paper (without bags, every sample is
            used once per epoch). Every bag must lie on one plate.

        Returns
        -------
        self : BENEmbedder
        """
        X, y, groups, controls, bags, y_enc = self._check_embedder_inputs(
            X, y, groups, controls, bags
        )
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with seeded(seed):
            backbone, n_out, shape = self._build_backbone(X)
            if self.method == "supervised":
                head = nn.Linear(n_out, len(np.unique(y_enc)))
                use = controls if NORMS[self.norm].controls else None
                net = self._train(
                    HeadNet(backbone, head),
                    BatchDataset(X, y_enc, use),
                    self._sampler(groups, controls),
                )
            else:
                head = _projection_head(n_out, self.projection_dim)
                net = self._train_contrastive(
                    HeadNet(backbone, head), X, groups, controls, bags, seed
                )
        self._set_fitted(X, shape, n_out, net)
        if self.method == "supervised":
            self.classes_ = np.unique(y)
        return self

    def _check_embedder_inputs(self, X, y, groups, controls, bags):
        X, y, groups, controls = self._check_fit_inputs(
            X, y if self.method == "supervised" else None, groups, controls
        )
        n = len(groups)
        y_enc = None
        if self.method == "supervised":
            if y is None:
                raise ValueError(
                    "BENEmbedder(method='supervised') requires y to be passed, but "
                    "the target y is None; pass the class of each sample or use "
                    "method='simclr'."
                )
            check_classification_targets(y)
            encoder = LabelEncoder().fit(y)
            if len(encoder.classes_) < 2:
                raise ValueError(
                    "method='supervised' needs at least two classes in y, but got "
                    f"1 class: {_plain(encoder.classes_[0])!r}."
                )
            y_enc = encoder.transform(y).astype(np.int64)
        if self.method == "minclr" and bags is None:
            raise ValueError(
                "method='minclr' makes views from different samples of the same "
                "bag, but fit got bags=None; pass bags=<source image of each "
                "crop> or use method='simclr'."
            )
        if bags is not None:
            bags = check_labels(bags, "bags", n, what="bag (source image)")
            plates_per_bag = pd.Series(groups).groupby(bags).nunique()
            mixed = plates_per_bag[plates_per_bag > 1]
            if len(mixed):
                raise GroupError(
                    f"{len(mixed)} bag(s) hold samples of several plates, e.g. bag "
                    f"{_plain(mixed.index[0])!r}; a bag is one image (or well), so "
                    "it lies on one plate. Check that bags and groups are aligned."
                )
            if self.method == "minclr" and self.augment is None:
                sizes = pd.Series(bags).value_counts()
                small = sizes[sizes < self.n_views]
                if len(small):
                    raise ValueError(
                        f"method='minclr' takes n_views={self.n_views} different "
                        f"crops of a bag, but {len(small)} bag(s) have fewer, e.g. "
                        f"bag {_plain(small.index[0])!r} with {int(small.iloc[0])}; "
                        "without augmentation their views would repeat identical "
                        "images. Lower n_views, drop small bags, or pass augment= "
                        "(e.g. sklearn_ben.augment.MicroscopyAugment()) so that "
                        "repeated crops differ."
                    )
        if self.method == "supervised":
            bags = None  # the supervised baseline trains on every sample
        return X, y, groups, controls, bags, y_enc

    def _train_contrastive(self, module, X, groups, controls, bags, seed):
        from sklearn_ben.losses import MultiViewNTXentLoss

        # Units: bags (one crop per image per batch, as in the paper) when
        # given, else samples.
        if bags is not None:
            _, first, inverse = np.unique(bags, return_index=True, return_inverse=True)
            members = [np.flatnonzero(inverse == k) for k in range(len(first))]
        else:
            first = np.arange(len(groups))
            members = [np.array([i]) for i in first]
        augment = self.augment
        if self.method == "simclr" and augment is None:
            augment = _default_augment()
        # The sampler draws units (samples or bags); a unit's plate and
        # control flag are those of its first sample.
        unit_groups = groups[first]
        unit_controls = None if controls is None else controls[first]
        dataset = _ViewDataset(
            X,
            controls if NORMS[self.norm].controls else None,
            members=members,
            n_views=self.n_views,
            augment=augment,
            distinct=self.method == "minclr",
        )
        sampler = KeyedBatchSampler(self._sampler(unit_groups, unit_controls), seed)
        return self._train(
            module,
            dataset,
            sampler,
            criterion=MultiViewNTXentLoss,
            criterion_params={"temperature": self.temperature},
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self.method == "supervised"
        return tags


def _default_augment():
    from sklearn_ben.augment import MicroscopyAugment

    return MicroscopyAugment()
