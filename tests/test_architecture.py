"""The house rules of docs/architecture.md, checked in fresh interpreters."""

import subprocess
import sys
import textwrap

import pytest

ENGINE = [
    "sklearn_ben.batchnorm",
    "sklearn_ben.samplers",
    "sklearn_ben.losses",
    "sklearn_ben.inference",
    "sklearn_ben.distributed",
]


def _run(code):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("module", ENGINE)
def test_engine_imports_without_sklearn_or_skorch(module):
    out = _run(
        f"""
        import sys

        sys.modules["sklearn"] = sys.modules["skorch"] = None  # as if not installed
        import {module}
        print(sorted(m for m, v in sys.modules.items() if v is not None and m.split(".")[0] in ("sklearn", "skorch")))
        """
    )
    assert out.strip() == "[]"


def test_engine_trains_in_a_plain_torch_loop_without_sklearn():
    _run(
        """
        import sys

        sys.modules["sklearn"] = sys.modules["skorch"] = None  # as if not installed
        import numpy as np, torch
        from torch import nn
        from sklearn_ben.batchnorm import convert_batchnorm
        from sklearn_ben.inference import predict_by_group
        from sklearn_ben.samplers import GroupBatchSampler

        groups = np.repeat(["p1", "p2"], 8)
        X = torch.randn(16, 3)
        net = convert_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)))
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for batch in GroupBatchSampler(groups, 4, random_state=0):
            assert len(set(groups[batch])) == 1
            opt.zero_grad()
            net(X[batch]).square().mean().backward()
            opt.step()
        out = predict_by_group(net.eval(), X.numpy(), groups)
        assert out.shape == (16, 4)
        """
    )


@pytest.mark.parametrize(
    "module", ["sklearn_ben.metrics", "sklearn_ben.datasets", "sklearn_ben"]
)
def test_numpy_side_modules_do_not_import_torch(module):
    out = _run(
        f"""
        import sys
        import {module}
        print("torch" in sys.modules, "skorch" in sys.modules)
        """
    )
    assert out.split() == ["False", "False"]


def test_package_face_is_lazy_but_complete():
    out = _run(
        """
        import sys
        import sklearn_ben
        names = [n for n in sklearn_ben.__all__ if n != "__version__"]
        missing = [n for n in names if getattr(sklearn_ben, n, None) is None]
        print(missing, "torch" in sys.modules, sorted(set(names) - set(dir(sklearn_ben))))
        """
    )
    assert out.split() == ["[]", "True", "[]"]
