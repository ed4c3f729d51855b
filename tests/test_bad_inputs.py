"""One table of bad or awkward inputs across the public API.

Each row is a call that must be refused with a clear message (or warn, for the
documented warnings), raised before any training step where the input allows
it. docs/user_guide.md's "Errors" section quotes the number of rows.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from sklearn_ben import (
    TVN,
    BENClassifier,
    BENEmbedder,
    ControlsError,
    GroupError,
    MissingMetadataError,
    MissingMetadataWarning,
    PlateControlScaler,
    config_context,
)
from sklearn_ben.backbones import MLP, SmallCNN
from sklearn_ben.batchnorm import bn_statistics, convert_batchnorm
from sklearn_ben.cells import crop_cells
from sklearn_ben.datasets import make_plates
from sklearn_ben.exceptions import DegenerateStatisticsWarning
from sklearn_ben.io import ImageFiles
from sklearn_ben.metrics import (
    batch_mixing_score,
    make_ben_scorer,
    mean_average_precision,
    moa_accuracy,
)
from sklearn_ben.samplers import GroupBatchSampler, KeyedBatchSampler


class _Ctx:
    """Small data shared by the cases (built once)."""

    def __init__(self):
        rng = np.random.default_rng(0)
        self.X = rng.normal(size=(24, 3, 8, 8)).astype(np.float32)
        self.y = np.tile([0, 1, 2], 8)
        self.g = np.repeat(["p1", "p2", "p3"], 8)
        self.c = np.tile([True, True, False, False], 6)
        self.T = rng.normal(size=(24, 5)).astype(np.float32)  # a feature table
        self.clf = _clf().fit(self.X, self.y, groups=self.g)
        self.mlp = _clf(module=MLP(hidden_units=8)).fit(self.T, self.y, groups=self.g)
        self.ctl = _clf(norm="controls", module=MLP(hidden_units=8)).fit(
            self.T, self.y, groups=self.g, controls=self.c
        )
        self.emb = BENEmbedder(
            module=SmallCNN(width=4, n_blocks=1),
            n_views=2,
            max_epochs=1,
            batch_size=8,
            projection_dim=4,
            random_state=0,
        ).fit(self.X, groups=self.g)


def _clf(**params):
    defaults = dict(
        module=SmallCNN(width=4, n_blocks=1), max_epochs=1, batch_size=8, random_state=0
    )
    return BENClassifier(**{**defaults, **params})


def _emb(**params):
    defaults = dict(
        module=SmallCNN(width=4, n_blocks=1),
        n_views=2,
        max_epochs=1,
        batch_size=8,
        projection_dim=4,
        random_state=0,
    )
    return BENEmbedder(**{**defaults, **params})


@pytest.fixture(scope="module")
def ctx():
    return _Ctx()


def _bad_augment(x, generator=None):
    return x[:, :1]  # drops channels


def _subclass_bn():
    class FusedBN(nn.BatchNorm2d):
        def forward(self, x):
            return torch.relu(super().forward(x))

    return convert_batchnorm(nn.Sequential(nn.Conv2d(3, 4, 3), FusedBN(4)))


def _lazy_bn():
    return convert_batchnorm(nn.Sequential(nn.LazyBatchNorm2d()))


def _set_and_predict(ctx, **params):
    import copy

    clf = copy.deepcopy(ctx.clf).set_params(**params)
    return clf.predict(ctx.X, groups=ctx.g)


def _strict_predict(ctx):
    with config_context(on_missing_metadata="raise"):
        return ctx.clf.predict(ctx.X)


def _with_column(T, values):
    frame = pd.DataFrame(T, columns=[f"f{i}" for i in range(T.shape[1])])
    return frame.assign(**values)


E, W = "error", "warning"
CASES = [
    # ---------------------------------------------------------- BENClassifier.fit
    (
        "fit_groups_length",
        lambda c: _clf().fit(c.X, c.y, groups=c.g[:-1]),
        GroupError,
        "groups has 23 entries but X has 24 samples",
    ),
    (
        "fit_groups_nan",
        lambda c: _clf().fit(c.X, c.y, groups=np.r_[c.g[:-1].astype(object), None]),
        GroupError,
        r"groups has 1 missing entries \(NaN or None\)",
    ),
    (
        "fit_groups_mixed_types",
        lambda c: _clf().fit(
            c.X, c.y, groups=np.array(["a"] * 12 + [1] * 12, dtype=object)
        ),
        GroupError,
        "groups mixes number and string plates",
    ),
    (
        "fit_groups_2d",
        lambda c: _clf().fit(c.X, c.y, groups=c.g.reshape(-1, 1)),
        ValueError,
        "groups must be one-dimensional",
    ),
    (
        "fit_controls_not_bool",
        lambda c: _clf(norm="controls").fit(
            c.X, c.y, groups=c.g, controls=c.c.astype(int)
        ),
        ControlsError,
        "controls must be a boolean mask, but got dtype int64",
    ),
    (
        "fit_controls_missing",
        lambda c: _clf(norm="controls").fit(c.X, c.y, groups=c.g),
        ControlsError,
        "fit got controls=None",
    ),
    (
        "fit_controls_too_few",
        lambda c: _clf(norm="controls").fit(
            c.X, c.y, groups=c.g, controls=np.arange(24) == 0
        ),
        ControlsError,
        r"in fit 3 plate\(s\) have fewer",
    ),
    (
        "fit_controls_length",
        lambda c: _clf().fit(c.X, c.y, groups=c.g, controls=c.c[:5]),
        ControlsError,
        "controls has 5 entries but X has 24 samples",
    ),
    (
        "fit_single_sample_group",
        lambda c: _clf().fit(c.X, c.y, groups=np.append(c.g[:-1], "p9")),
        GroupError,
        r"1 training group\(s\) have fewer than 2 samples: 'p9' \(1\)",
    ),
    (
        "fit_y_length",
        lambda c: _clf().fit(c.X, c.y[:-2], groups=c.g),
        ValueError,
        "y has 22 entries but X has 24 samples",
    ),
    (
        "fit_y_one_class",
        lambda c: _clf().fit(c.X, np.zeros(24), groups=c.g),
        ValueError,
        "needs at least two classes in y, but got 1 class",
    ),
    (
        "fit_y_none_entries",
        lambda c: _clf().fit(c.X, np.r_[c.y[:-1].astype(object), None], groups=c.g),
        ValueError,
        r"y has 1 missing entries|Input y contains NaN",
    ),
    (
        "fit_y_mixed_types",
        lambda c: _clf().fit(c.X, np.array([0, "a"] * 12, dtype=object), groups=c.g),
        ValueError,
        "y mixes number and string class labels",
    ),
    (
        "fit_y_continuous",
        lambda c: _clf().fit(c.X, np.linspace(0, 1, 24), groups=c.g),
        ValueError,
        "Unknown label type",
    ),
    (
        "fit_X_nan",
        lambda c: _clf().fit(
            np.where(np.arange(24)[:, None, None, None] == 3, np.nan, c.X),
            c.y,
            groups=c.g,
        ),
        ValueError,
        "Input X contains NaN",
    ),
    (
        "fit_X_inf",
        lambda c: _clf().fit(
            np.where(np.arange(24)[:, None, None, None] == 3, np.inf, c.X),
            c.y,
            groups=c.g,
        ),
        ValueError,
        "Input X contains infinity",
    ),
    (
        "fit_X_beyond_float32",
        lambda c: _clf().fit(c.X.astype(np.float64) * 1e300, c.y, groups=c.g),
        ValueError,
        "beyond float32's range",
    ),
    (
        "fit_X_3d",
        lambda c: _clf().fit(c.X[:, 0], c.y, groups=c.g),
        ValueError,
        r"X must be a feature table .* but got shape \(24, 8, 8\)",
    ),
    (
        "fit_X_channels_last",
        lambda c: _clf().fit(np.zeros((24, 16, 16, 3), np.float32), c.y, groups=c.g),
        ValueError,
        "looks channels-last",
    ),
    (
        "fit_X_one_sample",
        lambda c: _clf().fit(c.X[:1], c.y[:1], groups=c.g[:1]),
        ValueError,
        "minimum of 2 is required",
    ),
    (
        "fit_X_strings",
        lambda c: _clf().fit(np.array([["a"] * 5] * 24), c.y, groups=c.g),
        ValueError,
        "could not convert string to float",
    ),
    (
        "fit_unknown_module",
        lambda c: _clf(module="vgg99").fit(c.X, c.y, groups=c.g),
        ValueError,
        "'module' parameter of BENClassifier must be",
    ),
    (
        "fit_unknown_norm",
        lambda c: _clf(norm="plate").fit(c.X, c.y, groups=c.g),
        ValueError,
        "'norm' parameter of BENClassifier must be",
    ),
    (
        "fit_unknown_sampling",
        lambda c: _clf(sampling="plate").fit(c.X, c.y, groups=c.g),
        ValueError,
        "'sampling' parameter of BENClassifier must be",
    ),
    (
        "fit_batch_size_1",
        lambda c: _clf(batch_size=1).fit(c.X, c.y, groups=c.g),
        ValueError,
        "'batch_size' parameter of BENClassifier must be an int in the range",
    ),
    (
        "fit_lr_zero",
        lambda c: _clf(lr=0).fit(c.X, c.y, groups=c.g),
        ValueError,
        "'lr' parameter of BENClassifier must be a float in the range",
    ),
    (
        "fit_max_epochs_zero",
        lambda c: _clf(max_epochs=0).fit(c.X, c.y, groups=c.g),
        ValueError,
        "'max_epochs' parameter",
    ),
    (
        "fit_min_controls_one",
        lambda c: _clf(min_controls=1).fit(c.X, c.y, groups=c.g),
        ValueError,
        "'min_controls' parameter",
    ),
    (
        "fit_precision_fp16",
        lambda c: _clf(precision="float16").fit(c.X, c.y, groups=c.g),
        ValueError,
        "'precision' parameter",
    ),
    (
        "fit_intensity_bad_name",
        lambda c: _clf(intensity="max").fit(c.X, c.y, groups=c.g),
        ValueError,
        "'intensity' parameter",
    ),
    (
        "fit_intensity_bad_range",
        lambda c: _clf(intensity=(1, 0)).fit(c.X, c.y, groups=c.g),
        ValueError,
        "high",
    ),
    (
        "fit_intensity_wrong_channels",
        lambda c: _clf(intensity=([0, 0], [1, 1])).fit(c.X, c.y, groups=c.g),
        ValueError,
        "channel",
    ),
    (
        "fit_device_cuda_without_gpu",
        lambda c: _clf(device="cuda").fit(c.X, c.y, groups=c.g),
        ValueError,
        "device='cuda' but no CUDA GPU is available",
    ),
    (
        "fit_device_garbage",
        lambda c: _clf(device="tpu9").fit(c.X, c.y, groups=c.g),
        ValueError,
        "device='tpu9' is not a device torch knows",
    ),
    (
        "fit_early_stopping_without_validation",
        lambda c: _clf(n_iter_no_change=2).fit(c.X, c.y, groups=c.g),
        ValueError,
        "n_iter_no_change needs held-out groups",
    ),
    (
        "fit_validation_one_group",
        lambda c: _clf(validation_fraction=0.5).fit(c.X, c.y, groups=np.zeros(24)),
        ValueError,
        "validation_fraction holds out whole groups",
    ),
    (
        "fit_no_batchnorm",
        lambda c: _clf(module=nn.Sequential(nn.Flatten(), nn.Linear(192, 4))).fit(
            c.X, c.y, groups=c.g
        ),
        ValueError,
        "module has no BatchNorm layers",
    ),
    (
        "fit_module_wrong_type",
        lambda c: _clf(module=42).fit(c.X, c.y, groups=c.g),
        ValueError,
        "'module' parameter",
    ),
    (
        "fit_module_not_features",
        lambda c: _clf(module=nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))).fit(
            c.X, c.y, groups=c.g
        ),
        ValueError,
        r"module must return features of shape \(N, D\)",
    ),
    (
        "fit_mlp_on_images",
        lambda c: _clf(module="mlp").fit(c.X, c.y, groups=c.g),
        ValueError,
        "module MLP expects a feature table",
    ),
    (
        "fit_cnn_on_table",
        lambda c: _clf(module="cnn").fit(c.T, c.y, groups=c.g),
        ValueError,
        r"module SmallCNN expects images \(N, C, H, W\)",
    ),
    (
        "fit_lr_diverges",
        lambda c: _clf(lr=1e30, max_epochs=2).fit(c.X, c.y, groups=c.g),
        FloatingPointError,
        r"Training diverged: .* in epoch 1 .* lower lr",
    ),
    (
        "fit_without_groups_warns",
        lambda c: _clf().fit(c.X, c.y),
        MissingMetadataWarning,
        "BENClassifier.fit got no groups",
    ),
    # ---------------------------------------------------------- BENClassifier.predict
    (
        "predict_not_fitted",
        lambda c: _clf().predict(c.X, groups=c.g),
        ValueError,
        "This BENClassifier instance is not fitted yet",
    ),
    (
        "predict_channels",
        lambda c: c.clf.predict(c.X[:, :2], groups=c.g),
        ValueError,
        "X has 2 channels, but BENClassifier is expecting 3 channels",
    ),
    (
        "predict_table_on_image_model",
        lambda c: c.clf.predict(c.T, groups=c.g),
        ValueError,
        "X holds a feature table",
    ),
    (
        "predict_features",
        lambda c: c.mlp.predict(c.T[:, :4], groups=c.g),
        ValueError,
        "X has 4 features, but BENClassifier is expecting 5 features",
    ),
    (
        "predict_dataframe_reordered",
        lambda c: (
            _clf(module=MLP(hidden_units=8))
            .fit(_with_column(c.T, {}), c.y, groups=c.g)
            .predict(_with_column(c.T, {}).iloc[:, ::-1], groups=c.g)
        ),
        ValueError,
        "feature names",
    ),
    (
        "predict_dtype_change",
        lambda c: c.clf.predict((c.X * 100).astype(np.uint16), groups=c.g),
        ValueError,
        "X has dtype uint16, but BENClassifier was fitted on float32",
    ),
    (
        "predict_groups_length",
        lambda c: c.clf.predict(c.X, groups=c.g[:3]),
        GroupError,
        "groups has 3 entries but X has 24 samples",
    ),
    (
        "predict_single_sample_plate",
        lambda c: c.clf.predict(c.X[:3], groups=np.array(["a", "a", "b"])),
        GroupError,
        r"1 predicted group\(s\) have fewer than 2 samples",
    ),
    (
        "predict_tiny_plate_warns",
        lambda c: c.clf.predict(c.X[:3], groups=np.array(["a"] * 3)),
        DegenerateStatisticsWarning,
        r"fewer than 5 samples to compute batch-norm statistics from: 'a' \(3\)",
    ),
    (
        "predict_identical_controls_warn",
        lambda c: c.ctl.predict(
            np.r_[np.repeat(c.T[:1], 4, axis=0), c.T[4:8]],
            groups=np.array(["q"] * 8),
            controls=np.arange(8) < 4,
        ),
        DegenerateStatisticsWarning,
        r"Plate 'q': .* zero variance",
    ),
    (
        "predict_controls_too_few",
        lambda c: c.ctl.predict(c.T, groups=c.g, controls=np.arange(24) == 0),
        ControlsError,
        r"in predict 3 plate\(s\) have fewer",
    ),
    (
        "predict_controls_missing_warns",
        lambda c: c.ctl.predict(c.T, groups=c.g),
        MissingMetadataWarning,
        r"predict got no controls",
    ),
    (
        "predict_groups_missing_warns",
        lambda c: c.clf.predict(c.X),
        MissingMetadataWarning,
        r"BENClassifier\.predict got no groups",
    ),
    (
        "predict_groups_missing_strict",
        _strict_predict,
        MissingMetadataError,
        r"BENClassifier\.predict got no groups",
    ),
    (
        "predict_after_bad_set_params_norm",
        lambda c: _set_and_predict(c, norm="bogus"),
        ValueError,
        "'norm' parameter of BENClassifier must be",
    ),
    (
        "predict_after_bad_predict_batch_size",
        lambda c: _set_and_predict(c, predict_batch_size=-5),
        ValueError,
        "'predict_batch_size' parameter",
    ),
    (
        "predict_X_nan",
        lambda c: c.clf.predict(np.full_like(c.X, np.nan), groups=c.g),
        ValueError,
        "Input X contains NaN",
    ),
    (
        "predict_X_beyond_float32",
        lambda c: c.clf.predict(c.X.astype(np.float64) * 1e300, groups=c.g),
        ValueError,
        "beyond float32's range",
    ),
    (
        "predict_image_size_warns",
        lambda c: c.clf.predict(
            np.zeros((4, 3, 16, 16), np.float32) + np.arange(4)[:, None, None, None],
            groups=np.zeros(4),
        ),
        UserWarning,
        r"images of size \(16, 16\), but BENClassifier was fitted on \(8, 8\)",
    ),
    (
        "score_y_length",
        lambda c: c.clf.score(c.X, c.y[:5], groups=c.g),
        ValueError,
        "inconsistent numbers of samples",
    ),
    # ---------------------------------------------------------- BENEmbedder
    (
        "emb_minclr_without_bags",
        lambda c: _emb(method="minclr").fit(c.X, groups=c.g),
        ValueError,
        "method='minclr' makes views from different samples",
    ),
    (
        "emb_bags_length",
        lambda c: _emb(method="minclr").fit(c.X, groups=c.g, bags=np.arange(3)),
        ValueError,
        "bags has 3 entries but X has 24 samples",
    ),
    (
        "emb_bags_nan",
        lambda c: _emb(method="minclr").fit(
            c.X, groups=c.g, bags=np.r_[np.arange(23) // 2, np.nan]
        ),
        ValueError,
        r"bags has 1 missing entries",
    ),
    (
        "emb_bags_across_plates",
        lambda c: _emb(method="minclr").fit(c.X, groups=c.g, bags=np.arange(24) % 2),
        GroupError,
        r"2 bag\(s\) hold samples of several plates",
    ),
    (
        "emb_minclr_small_bags",
        lambda c: _emb(method="minclr", n_views=3).fit(
            c.X, groups=c.g, bags=np.arange(24) // 2
        ),
        ValueError,
        r"method='minclr' takes n_views=3 different crops of a bag, but 12 bag\(s\) have fewer",
    ),
    (
        "emb_supervised_without_y",
        lambda c: _emb(method="supervised").fit(c.X, groups=c.g),
        ValueError,
        "requires y to be passed",
    ),
    (
        "emb_n_views_one",
        lambda c: _emb(n_views=1).fit(c.X, groups=c.g),
        ValueError,
        "'n_views' parameter",
    ),
    (
        "emb_temperature_zero",
        lambda c: _emb(temperature=0).fit(c.X, groups=c.g),
        ValueError,
        "'temperature' parameter",
    ),
    (
        "emb_unknown_method",
        lambda c: _emb(method="byol").fit(c.X, groups=c.g),
        ValueError,
        "'method' parameter",
    ),
    (
        "emb_augment_wrong_shape",
        lambda c: _emb(augment=_bad_augment).fit(c.X, groups=c.g),
        ValueError,
        r"augment=.* must return a float tensor of views",
    ),
    (
        "emb_transform_channels",
        lambda c: c.emb.transform(c.X[:, :1], groups=c.g),
        ValueError,
        "X has 1 channels, but BENEmbedder is expecting 3 channels",
    ),
    (
        "emb_transform_groups_missing_warns",
        lambda c: c.emb.transform(c.X),
        MissingMetadataWarning,
        r"BENEmbedder\.transform got no groups",
    ),
    # ---------------------------------------------------------- engine
    (
        "sampler_batch_size_1",
        lambda c: GroupBatchSampler(c.g, 1),
        ValueError,
        "batch_size should be at least 2",
    ),
    (
        "sampler_batch_size_float",
        lambda c: GroupBatchSampler(c.g, 2.5),
        TypeError,
        "batch_size should be an integer",
    ),
    (
        "sampler_min_controls_without_mask",
        lambda c: GroupBatchSampler(c.g, 4, min_controls=2),
        ValueError,
        "min_controls=2 needs the controls mask",
    ),
    (
        "sampler_random_state_bad",
        lambda c: GroupBatchSampler(c.g, 4, random_state="x"),
        ValueError,
        "random_state should be None, an int or a numpy RandomState",
    ),
    (
        "keyed_sampler_negative_seed",
        lambda c: KeyedBatchSampler(GroupBatchSampler(c.g, 4), seed=-1),
        ValueError,
        "seed should be a non-negative integer",
    ),
    (
        "bn_statistics_unknown_source",
        lambda c: bn_statistics("plate").__enter__(),
        ValueError,
        "Unknown batch-norm statistics source 'plate'",
    ),
    (
        "convert_subclass_with_forward",
        lambda c: _subclass_bn(),
        TypeError,
        "FusedBN at '1' subclasses BatchNorm2d with its own forward",
    ),
    (
        "convert_lazy_uninitialised",
        lambda c: _lazy_bn(),
        TypeError,
        "lazy batch-norm layer that has not seen data yet",
    ),
    # ---------------------------------------------------------- TVN, PlateControlScaler
    (
        "tvn_controls_not_bool",
        lambda c: TVN().fit(c.T, groups=c.g, controls=c.c.astype(float)),
        ControlsError,
        "controls must be a boolean mask",
    ),
    (
        "tvn_groups_length",
        lambda c: TVN().fit(c.T, groups=c.g[:4], controls=c.c),
        GroupError,
        "groups has 4 entries but X has 24 samples",
    ),
    (
        "tvn_without_groups_warns",
        lambda c: TVN().fit(c.T, controls=c.c),
        MissingMetadataWarning,
        r"TVN\.fit got no groups",
    ),
    (
        "tvn_nan",
        lambda c: TVN().fit(np.full_like(c.T, np.nan), groups=c.g, controls=c.c),
        ValueError,
        "Input X contains NaN",
    ),
    (
        "scaler_controls_missing_on_plate",
        lambda c: PlateControlScaler().fit_transform(
            c.T, groups=c.g, controls=np.arange(24) < 8
        ),
        ControlsError,
        "control",
    ),
    (
        "scaler_controls_not_bool",
        lambda c: PlateControlScaler().fit(c.T, groups=c.g, controls=c.c.astype(int)),
        ControlsError,
        "controls must be a boolean mask",
    ),
    (
        "scaler_images_then_table",
        lambda c: PlateControlScaler().fit(c.X, groups=c.g).transform(c.T, groups=c.g),
        ValueError,
        "image",
    ),
    # ---------------------------------------------------------- metrics
    (
        "moa_lengths",
        lambda c: moa_accuracy(c.T, ["a"] * 3, compound=["x"] * 24),
        ValueError,
        "3 entries but X has 24",
    ),
    (
        "moa_labels_nan",
        lambda c: moa_accuracy(c.T, [None] + ["a"] * 23, compound=["x"] * 24),
        ValueError,
        "missing entries",
    ),
    (
        "mixing_lengths",
        lambda c: batch_mixing_score(c.T, c.g[:5]),
        ValueError,
        "5 entries but X has 24",
    ),
    (
        "map_unknown_metric",
        lambda c: mean_average_precision(c.T, c.y, metric="manhattan2"),
        ValueError,
        "metric",
    ),
    (
        "map_labels_length",
        lambda c: mean_average_precision(c.T, c.y[:3]),
        ValueError,
        "3 entries but X has 24",
    ),
    ("scorer_string", lambda c: make_ben_scorer("accuracy"), TypeError, "score_func"),
    (
        "scorer_bad_response_method",
        lambda c: make_ben_scorer(response_method="decision_function"),
        ValueError,
        "response_method",
    ),
    # ---------------------------------------------------------- data
    (
        "image_files_empty",
        lambda c: ImageFiles([]),
        ValueError,
        "ImageFiles needs at least one",
    ),
    (
        "image_files_missing_file",
        lambda c: ImageFiles(["/nonexistent/a.tif"]),
        FileNotFoundError,
        r"1 of 1 image files do not exist, the first being '/nonexistent/a.tif' \(sample 0\)",
    ),
    (
        "crop_cells_nan_centre",
        lambda c: crop_cells(
            np.zeros((1, 1, 10, 10)), [np.array([[np.nan, 3.0]])], size=4
        ),
        ValueError,
        "y coordinate that is NaN, infinite or absurdly large",
    ),
    (
        "crop_cells_huge_centre",
        lambda c: crop_cells(
            np.zeros((1, 1, 10, 10)), [np.array([[3.0, 1e300]])], size=4
        ),
        ValueError,
        "x coordinate that is NaN, infinite or absurdly large",
    ),
    (
        "crop_cells_bad_size",
        lambda c: crop_cells(np.zeros((1, 1, 10, 10)), [np.array([[3, 3]])], size=0),
        ValueError,
        "size should be a positive integer",
    ),
    (
        "make_plates_too_big",
        lambda c: make_plates(n_plates=10**12),
        ValueError,
        "make_plates would generate",
    ),
    (
        "make_plates_bad_composition",
        lambda c: make_plates(composition="mixed"),
        ValueError,
        "composition to be 'balanced' or 'varied'",
    ),
    (
        "make_plates_n_plates_zero",
        lambda c: make_plates(n_plates=0),
        ValueError,
        "n_plates to be an integer",
    ),
]


@pytest.mark.parametrize(
    "call, expected, match",
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_bad_input_is_refused_or_warned(ctx, call, expected, match):
    if issubclass(expected, Warning):
        with pytest.warns(expected, match=match):
            call(ctx)
    else:
        with pytest.raises(expected, match=match):
            call(ctx)


def test_bad_input_table_is_large_and_unique():
    names = [case[0] for case in CASES]
    assert len(names) == len(set(names))
    assert len(names) >= 80
