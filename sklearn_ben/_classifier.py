"""BENClassifier: a network classifier trained and applied plate by plate."""

import inspect
import warnings

import numpy as np
import torch
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_sample_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d
from torch import nn

from sklearn_ben._base import _REQUEST, NORMS, BENBase
from sklearn_ben._data import BatchDataset, is_dataset
from sklearn_ben._nets import HeadNet, seeded
from sklearn_ben._sklearn_compat import (
    StrOptions,
    _check_sample_weight,
    _fit_context,
)
from sklearn_ben._validation import _plain, check_group_sizes, check_labels

__all__ = ["BENClassifier"]


class BENClassifier(ClassifierMixin, BENBase):
    """Neural-network classifier with batch effects normalization (BEN).

    BEN (Lin & Lu) changes three things in any network with batch
    normalisation: each training minibatch comes from one plate (group-wise
    training, ``sampling="group"``); predictions are made for a whole plate at
    once (group-wise inference); and batch-norm statistics at inference are
    those of the plate rather than running averages from training
    (``norm="group"``), optionally computed from the plate's control samples
    only, in training too (``norm="controls"``). The network is trained with
    skorch; this estimator owns it as ``net_``.

    Parameters
    ----------
    module : str, backbone or torch.nn.Module, default="cnn"
        The backbone: ``"cnn"`` (:class:`~sklearn_ben.backbones.SmallCNN`),
        ``"resnet18"``, ``"resnet50"`` (torchvision, any channel count),
        ``"mlp"`` (:class:`~sklearn_ben.backbones.MLP`, for feature tables), a
        backbone object whose parameters are then tunable as
        ``module__<name>``, or your own ``nn.Module`` mapping a batch to
        features of shape (N, D). A linear classification head is added.
    sampling : {"group", "random"}, default="group"
        How training batches are drawn: from one group (plate) each, or at
        random across groups (the vanilla baseline).
    norm : {"group", "controls", "frozen"}, default="group"
        Where batch-norm statistics come from: the whole group being
        predicted; the group's controls only (in training too, where each
        batch's statistics come from its controls); or the running averages of
        training (plain PyTorch eval, the vanilla baseline).
    batch_size : int, default=75
        Training batch size (the paper's).
    max_epochs : int, default=30
        Number of training epochs.
    lr : float, default=1e-3
        Peak learning rate of Adam.
    weight_decay : float, default=1e-5
        Adam's weight decay.
    warmup_epochs : int or "auto", default="auto"
        Epochs of linear learning-rate warm-up before cosine annealing to zero
        (stepped every batch). "auto" is ``max_epochs // 9`` (10 of 90 in the
        paper).
    min_controls : int, default=2
        With ``norm="controls"``, least number of controls of its plate in
        every training batch (drawn again from the plate when short).
    predict_batch_size : int or None, default=None
        Largest number of samples sent through the network at once at
        inference. ``None`` sends each whole group at once (fastest). A smaller
        value bounds memory; outputs stay those of the whole group (see the
        user guide), at the cost of a few partial passes per network block.
    validation_fraction : float or None, default=None
        Share of the training groups held out (whole plates) and scored after
        each epoch with group-wise inference (``valid_loss``, ``valid_acc``).
    n_iter_no_change : int or None, default=None
        Stop when ``valid_loss`` has not improved for this many epochs, and
        keep the best epoch's weights. Needs ``validation_fraction``.
    device : {"auto", "cpu", "cuda"} or str, default="auto"
        Where to train; "auto" uses CUDA when available.
    num_workers : int, default=0
        DataLoader workers for training batches (useful for lazy datasets).
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
        Seeds weights, sampling and validation split. On CPU, the same seed
        gives the same predictions.
    verbose : int, default=0
        0: silent; 1: an epoch table (plain text when stdout is not a
        terminal); 2: also a progress bar per epoch (on a terminal). Every
        epoch is also logged at INFO on the ``"sklearn_ben"`` logger.
    optimizer : torch optimizer class, default=torch.optim.Adam
        Optimiser, built with ``lr``, ``weight_decay`` (when it takes one) and
        ``optimizer_params``; the warm-up/cosine schedule applies to it.
    optimizer_params : dict, default=None
        Further optimiser arguments, e.g. ``{"betas": (0.9, 0.99)}``; also
        settable as ``set_params(optimizer__betas=...)`` (skorch's spelling;
        ``optimizer__lr`` and ``optimizer__weight_decay`` set ``lr`` and
        ``weight_decay``).
    criterion : torch loss class, default=None
        Loss; None is ``torch.nn.CrossEntropyLoss``. With ``class_weight`` or
        ``sample_weight`` it is built with ``reduction="none"``.
    criterion_params : dict, default=None
        Loss arguments, e.g. ``{"label_smoothing": 0.1}``; also
        ``criterion__<name>``.
    callbacks : list, dict or None, default=None
        skorch callbacks, or ``(name, callback)`` pairs, run after
        sklearn-ben's own (held-out scoring, early stopping, schedule); their
        records land in ``net_.history``. Parameters are reachable as
        ``callbacks__<name>__<param>``. Copies are trained, so the objects
        passed stay unchanged.
    iterator_train_params : dict, default=None
        Further ``torch.utils.data.DataLoader`` arguments for training
        (``pin_memory``, ``persistent_workers``, ``prefetch_factor``...); also
        ``iterator_train__<name>``. Arguments that would break one-plate
        batches (``batch_size``, ``sampler``, ``batch_sampler``, ``shuffle``,
        ``drop_last``) are refused.
    train_split : callable or None, default=None
        skorch's ``train_split``, e.g.
        ``skorch.dataset.ValidSplit(GroupKFold(5))``: called with the sample
        positions, ``y`` and ``groups=``, it returns the training and held-out
        subsets; held-out rows are scored plate by plate as with
        ``validation_fraction`` (use one or the other). A split that puts
        samples of one plate on both sides warns.
    class_weight : "balanced", dict or None, default=None
        Weights of the classes in the loss, as in scikit-learn ("balanced":
        ``n_samples / (n_classes * count)``). Multiplied with ``sample_weight``.
    warm_start : bool, default=False
        When fitted, a new ``fit`` continues from the fitted weights (a new
        optimiser and schedule of ``max_epochs`` epochs); the data must have
        the fitted sample shape and classes. ``net_.history``, ``n_iter_`` and
        ``loss_curve_`` go on counting. ``module`` is not read again.
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
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    net_ : skorch.NeuralNet
        The trained network; ``net_.history`` holds the training log.
    n_features_in_ : int
        Number of features (or image channels) seen in fit.
    input_shape_ : tuple
        Shape of one sample seen in fit.
    n_features_out_ : int
        Dimension of the backbone features returned by ``transform``.
    device_ : str
        Device the network was trained on.
    n_iter_ : int
        Epochs run (over every fit under ``warm_start``).
    loss_curve_ : list of float
        Training loss of each epoch.
    best_epoch_ : int or None
        With ``n_iter_no_change``: the epoch whose weights were kept (lowest
        ``valid_loss``); None otherwise.
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
    BENEmbedder : Self-supervised or supervised embeddings with BEN.
    sklearn_ben.metrics.make_ben_scorer : A scorer that passes plates on.

    Notes
    -----
    ``groups`` and ``controls`` are requested by default under scikit-learn's
    metadata routing, so with ``sklearn.set_config(enable_metadata_routing=True)``
    they reach this estimator inside ``Pipeline``, ``GridSearchCV`` and
    ``cross_validate``. Without routing they are dropped and the estimator
    warns (``MissingMetadataWarning``) and treats all samples as one plate.
    ``sample_weight`` is not requested by default, as in scikit-learn; use
    ``set_fit_request(sample_weight=True)``.

    skorch's prefixed keys (``optimizer__*``, ``criterion__*``,
    ``iterator_train__*``, ``callbacks__<name>__*``) work in ``set_params``,
    ``get_params`` and ``GridSearchCV`` grids; the constructor, keyword-only
    as in scikit-learn, takes them as the dicts ``optimizer_params``,
    ``criterion_params`` and ``iterator_train_params``, which the prefixed
    keys read and write. See the user guide's "Training options".

    Sample and class weights make each batch's loss the mean of the weighted
    per-sample losses; the weights are first rescaled to mean 1 over the
    training samples, so only their ratios matter, and a plate given a low
    weight keeps it even though each batch holds one plate.

    References
    ----------
    .. [1] A. Lin and A. X. Lu, "Incorporating knowledge of plates in batch
       normalization improves generalization of deep learning for microscopy
       images", 2022.

    Examples
    --------
    >>> from sklearn_ben import BENClassifier
    >>> from sklearn_ben.datasets import make_plates
    >>> data = make_plates(n_plates=3, n_samples_per_plate=24, image_size=16,
    ...                    random_state=0)
    >>> clf = BENClassifier(max_epochs=2, random_state=0)
    >>> clf.fit(data.X, data.y, groups=data.groups)
    BENClassifier(max_epochs=2, random_state=0)
    >>> clf.predict(data.X[:5], groups=data.groups[:5]).shape
    (5,)
    """

    __metadata_request__predict = _REQUEST
    __metadata_request__predict_proba = _REQUEST
    __metadata_request__score = _REQUEST

    def __init__(
        self,
        *,
        module="cnn",
        sampling="group",
        norm="group",
        batch_size=75,
        max_epochs=30,
        lr=1e-3,
        weight_decay=1e-5,
        warmup_epochs="auto",
        min_controls=2,
        predict_batch_size=None,
        validation_fraction=None,
        n_iter_no_change=None,
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
        train_split=None,
        class_weight=None,
        warm_start=False,
        accelerator=None,
    ):
        self.module = module
        self.sampling = sampling
        self.norm = norm
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.min_controls = min_controls
        self.predict_batch_size = predict_batch_size
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
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
        self.train_split = train_split
        self.class_weight = class_weight
        self.warm_start = warm_start

        self.accelerator = accelerator

    _parameter_constraints = {
        **BENBase._parameter_constraints,
        "class_weight": [None, StrOptions({"balanced"}), dict],
    }

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, *, groups=None, controls=None, sample_weight=None):
        """Train the network on plate-homogeneous batches.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Images (any numeric dtype; integer images are scaled by their
            dtype's maximum, batch by batch) or a feature table. A torch
            ``Dataset`` of images is read lazily.
        y : array-like of shape (n_samples,)
            Class labels.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            True for control samples; needed with ``norm="controls"``.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample in the loss (multiplied with
            ``class_weight``).

        Returns
        -------
        self : BENClassifier
            The fitted estimator.
        """
        X_in = X
        X, y, groups, controls = self._check_fit_inputs(X, y, groups, controls)
        if y is None:
            raise ValueError(
                "BENClassifier requires y to be passed, but the target y is None; "
                "pass the class of each sample."
            )
        y = check_labels(column_or_1d(y, warn=True), "y", len(y), what="class label")
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        if len(encoder.classes_) < 2:
            raise ValueError(
                "BENClassifier needs at least two classes in y, but got 1 class: "
                f"{_plain(encoder.classes_[0])!r}; add samples of another class."
            )
        y_enc = encoder.transform(y).astype(np.int64)
        weights = self._loss_weights(sample_weight, y, len(X))
        module = self._warm_module(X, encoder.classes_)
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        train, held_out = self._held_out(y_enc, groups, rng)
        train_weights = _train_weights(weights, train)
        use_controls = controls if NORMS[self.norm].controls else None
        with seeded(seed):
            if module is None:
                backbone, n_out, shape = self._build_backbone(X)
                module = HeadNet(backbone, nn.Linear(n_out, len(encoder.classes_)))
            else:
                n_out, shape = self.n_features_out_, self.input_shape_
            validation = None
            if held_out.any():
                validation = self._validation(
                    _subset(X, held_out),
                    y_enc[held_out],
                    groups[held_out],
                    None if controls is None else controls[held_out],
                )
            c_train = None if controls is None else controls[train]
            net = self._train(
                module,
                BatchDataset(
                    _subset(X, train),
                    y_enc[train],
                    None if use_controls is None else use_controls[train],
                    intensity=self.intensity,
                ),
                self._sampler(groups[train], c_train),
                validation=validation,
                sample_weight=train_weights,
            )
        # Every check has passed and training succeeded: now change self.
        self._set_fitted(X_in, X, shape, n_out, net)
        self.classes_ = encoder.classes_
        return self

    def _loss_weights(self, sample_weight, y, n):
        """Per-sample loss weights (class and sample weights), or None."""
        weights = None
        if sample_weight is not None:
            weights = _check_sample_weight(
                sample_weight,
                np.empty((n, 0)),
                dtype=np.float64,
                ensure_non_negative=True,
            )
        if self.class_weight is not None:
            by_class = compute_sample_weight(self.class_weight, y)
            weights = by_class if weights is None else weights * by_class
        return weights

    def _held_out(self, y_enc, groups, rng):
        """Training and held-out masks: validation_fraction or train_split."""
        n = len(y_enc)
        if self.validation_fraction is not None:
            held_out = self._split_validation(groups, rng)
            return ~held_out, held_out
        if self.train_split is None:
            return np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
        rows = np.arange(n)
        accepts = inspect.signature(self.train_split).parameters
        kwargs = {"groups": groups} if "groups" in accepts else {}
        parts = self.train_split(rows, y_enc, **kwargs)
        train, held_out = (_positions(part, rows) for part in parts)
        if (train & held_out).any() or not train.any() or not held_out.any():
            raise ValueError(
                f"train_split returned {train.sum()} training and {held_out.sum()} "
                f"held-out samples ({(train & held_out).sum()} on both sides); "
                "it must split the samples into two non-empty disjoint parts."
            )
        check_group_sizes(groups[held_out], 2, what="held-out")
        shared = np.intersect1d(groups[train], groups[held_out])
        if len(shared):
            warnings.warn(
                f"train_split put samples of {len(shared)} plate(s), e.g. "
                f"{_plain(shared[0])!r}, in both training and held-out data, so "
                "valid_loss measures generalisation within plates, not to new "
                "plates; split by plate with skorch.dataset.ValidSplit("
                "GroupKFold(5)) or validation_fraction.",
                UserWarning,
                stacklevel=4,
            )
        return train, held_out

    def predict_proba(self, X, *, groups=None, controls=None):
        """Class probabilities, with each plate normalised by its own statistics.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Samples to predict.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample; each plate is normalised with its own
            batch-norm statistics (``norm="group"`` or ``"controls"``).
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask, used with ``norm="controls"``.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probability of each class.
        """
        return self._proba(X, groups, controls, "predict_proba")

    def _proba(self, X, groups, controls, method):
        X, groups, controls, norm, stored = self._check_predict_inputs(
            X, groups, controls, method
        )
        logits = self._predict_outputs(
            self.net_.module_, X, groups, controls, norm, stored
        )
        return torch.softmax(logits, dim=1).numpy()

    def predict(self, X, *, groups=None, controls=None):
        """Predict classes, plate by plate.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Samples to predict.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask, used with ``norm="controls"``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Predicted classes.
        """
        return self._predict(X, groups, controls, "predict")

    def _predict(self, X, groups, controls, method):
        proba = self._proba(X, groups, controls, method)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X, y, *, groups=None, controls=None, sample_weight=None):
        """Accuracy of ``predict(X, groups=groups, controls=controls)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, C, H, W) or (n_samples, n_features)
            Samples.
        y : array-like of shape (n_samples,)
            True classes.
        groups : array-like of shape (n_samples,), default=None
            Plate of each sample.
        controls : array-like of bool, shape (n_samples,), default=None
            Control mask, used with ``norm="controls"``.
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        score : float
            Mean accuracy.
        """
        y_pred = self._predict(X, groups, controls, "score")
        return accuracy_score(y, y_pred, sample_weight=sample_weight)


def _positions(part, rows):
    """Mask of the rows that a ``train_split`` part holds."""
    if part is rows:
        return np.ones(len(rows), dtype=bool)
    if isinstance(part, torch.utils.data.Subset) and part.dataset is rows:
        mask = np.zeros(len(rows), dtype=bool)
        mask[np.asarray(part.indices, dtype=int)] = True
        return mask
    raise ValueError(
        "train_split must return subsets of the samples it is given, as "
        f"skorch.dataset.ValidSplit does, but returned a {type(part).__name__}; "
        "held-out data need their plates, so pass them in X with groups "
        "(predefined_split is not supported)."
    )


def _train_weights(weights, train):
    """Training rows' weights rescaled to mean 1; None when all equal."""
    if weights is None:
        return None
    weights = weights[train]
    total = weights.sum()
    if total <= 0:
        raise ValueError(
            "sample_weight and class_weight give every training sample weight "
            "0; give some samples a positive weight."
        )
    if np.all(weights == weights[0]):
        return None  # equal weights: exactly the unweighted loss
    return weights * (len(weights) / total)


def _subset(X, mask):
    if mask.all():
        return X
    if is_dataset(X):
        return torch.utils.data.Subset(X, np.flatnonzero(mask).tolist())
    return X[mask]
