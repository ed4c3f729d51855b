"""BENEmbedder: self-supervised or supervised embeddings with BEN."""

from numbers import Integral, Real

import numpy as np
import pandas as pd
import torch
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d
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

    def __init__(
        self, X, controls, *, members, n_views, augment, distinct, intensity="dtype"
    ):
        super().__init__(X, None, controls, intensity=intensity)
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
        return _check_augmented(self.augment(x, generator=generator), x, self.augment)


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
    intensity : {"dtype", "none"}, (low, high) or ("percentile", lo, hi), \
            default="dtype"
        How raw values become network inputs, batch by batch, the same in
        fit and predict: integers divided by their dtype's maximum
        (``"dtype"``, floats unchanged); values as they are (``"none"``); a
        fixed ``(low, high)`` per channel mapped to [0, 1]; or each image's
        percentiles. With ``"dtype"``, predicting on another dtype than fit's
        is refused (it would rescale the inputs).
    random_state : int, RandomState instance or None, default=None
        Seeds weights, sampling and augmentations.
    verbose : int, default=0
        0: silent; 1: epoch table (plain text when stdout is not a terminal);
        2: also a progress bar (on a terminal). Epochs are also logged at INFO
        on the ``"sklearn_ben"`` logger.
    optimizer : torch optimizer class, default=torch.optim.Adam
        Optimiser, as in BENClassifier.
    optimizer_params : dict, default=None
        Further optimiser arguments; also ``optimizer__<name>``.
    criterion : torch loss class, default=None
        None: the method's loss (:class:`~sklearn_ben.losses.MultiViewNTXentLoss`
        with ``temperature``, or cross-entropy for ``"supervised"``). A
        contrastive criterion is called with the projections (B*K, dim) and
        the view ids (B*K,).
    criterion_params : dict, default=None
        Loss arguments; also ``criterion__<name>`` (``temperature`` is the
        estimator's own parameter).
    callbacks : list, dict or None, default=None
        skorch callbacks, as in BENClassifier.
    iterator_train_params : dict, default=None
        Further DataLoader arguments, as in BENClassifier.
    warm_start : bool, default=False
        When fitted, a new ``fit`` continues from the fitted weights; the data
        must have the fitted sample shape (and classes, for ``"supervised"``),
        and ``method`` and ``projection_dim`` must be those of the fitted
        network.
    accelerator : accelerate.Accelerator or None, default=None
        Train data-parallel across the processes that ``accelerate launch``
        (or ``torchrun``) started: each process trains on its own whole-plate
        batches, batch norm is not synchronised, and gradients are averaged.
        Needs an int ``random_state`` and ``device="auto"``. Inference with
        the fitted estimator is then split by plate over the processes, and
        every process returns all rows. Not pickled: an unpickled estimator
        has ``accelerator=None`` and predicts in one process. See
        docs/scaling.md.

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
    n_iter_ : int
        Epochs run (over every fit under ``warm_start``).
    loss_curve_ : list of float
        Training loss of each epoch.
    best_epoch_ : None
        Always None: contrastive training has no held-out scoring.
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
            if k not in ("validation_fraction", "n_iter_no_change", "train_split")
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
    train_split = None

    _criterion_aliases = {"temperature": "temperature"}

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
        intensity="dtype",
        random_state=None,
        verbose=0,
        optimizer=torch.optim.Adam,
        optimizer_params=None,
        criterion=None,
        criterion_params=None,
        callbacks=None,
        iterator_train_params=None,
        warm_start=False,
        accelerator=None,
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
        self.intensity = intensity
        self.random_state = random_state
        self.verbose = verbose
        self.optimizer = optimizer
        self.optimizer_params = optimizer_params
        self.criterion = criterion
        self.criterion_params = criterion_params
        self.callbacks = callbacks
        self.iterator_train_params = iterator_train_params
        self.warm_start = warm_start
        self.accelerator = accelerator

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
        X_in = X
        X, y, groups, controls, bags, y_enc = self._check_embedder_inputs(
            X, y, groups, controls, bags
        )
        module = self._warm_embedder(X, y)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        with seeded(seed):
            if module is None:
                backbone, n_out, shape = self._build_backbone(X)
                if self.method == "supervised":
                    head = nn.Linear(n_out, len(np.unique(y_enc)))
                else:
                    head = _projection_head(n_out, self.projection_dim)
                module = HeadNet(backbone, head)
            else:
                n_out, shape = self.n_features_out_, self.input_shape_
            if self.method == "supervised":
                use = controls if NORMS[self.norm].controls else None
                net = self._train(
                    module,
                    BatchDataset(X, y_enc, use, intensity=self.intensity),
                    self._sampler(groups, controls),
                )
            else:
                net = self._train_contrastive(module, X, groups, controls, bags, seed)
        self._set_fitted(X_in, X, shape, n_out, net)
        if self.method == "supervised":
            self.classes_ = np.unique(y)
        return self

    def _warm_embedder(self, X, y):
        """The fitted network to continue from (``warm_start``), or None."""
        supervised = self.method == "supervised"
        classes = np.unique(y) if supervised else None
        if supervised and getattr(self, "classes_", None) is None:
            classes = None  # the fitted net has no class head: refused below
        module = self._warm_module(X, classes)
        if module is None:
            return None
        head = module.head
        fitted = "supervised" if isinstance(head, nn.Linear) else "contrastive"
        wanted = "supervised" if supervised else "contrastive"
        if fitted != wanted or (
            not supervised and head[-1].out_features != self.projection_dim
        ):
            raise ValueError(
                f"warm_start=True continues the fitted network, but it was fitted "
                f"with a {fitted} head of {_head_size(head)} outputs and fit now "
                f"asks for method={self.method!r} (projection_dim="
                f"{self.projection_dim}); keep the fitted method and "
                "projection_dim, or set warm_start=False to train a new network."
            )
        return module

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
            y = check_labels(
                column_or_1d(y, warn=True), "y", len(y), what="class label"
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
            intensity=self.intensity,
        )
        if augment is not None and len(self._input_shape(X)) == 3:
            # a broken augmentation fails here, before any training step
            probe = dataset.get_inputs(np.arange(min(2, len(X))))
            _check_augmented(
                augment(probe, generator=torch.Generator().manual_seed(0)),
                probe,
                augment,
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


def _check_augmented(out, x: Tensor, augment) -> Tensor:
    """The views ``augment`` made of ``x``, if they are views of ``x``; else raise."""
    shape = tuple(out.shape) if isinstance(out, Tensor) else None
    if shape is None or len(shape) != 4 or shape[:2] != tuple(x.shape[:2]):
        got = f"shape {shape}" if shape is not None else type(out).__name__
        raise ValueError(
            f"augment={augment!r} must return a float tensor of views (N, C, H', "
            f"W') with the input's N={x.shape[0]} and C={x.shape[1]}, but for a "
            f"batch of shape {tuple(x.shape)} it returned {got}; fix the "
            "augmentation (it gets x and generator=, and returns one view per row)."
        )
    return out


def _default_augment():
    from sklearn_ben.augment import MicroscopyAugment

    return MicroscopyAugment()


def _head_size(head: nn.Module) -> int:
    """Outputs of a training head (a Linear or a projection Sequential)."""
    return head.out_features if isinstance(head, nn.Linear) else head[-1].out_features
