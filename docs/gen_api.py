"""Write docs/api.md from the docstrings of the public API.

Run ``python docs/gen_api.py``; ``tests/test_docs.py`` fails when the file is
out of date, so the reference cannot drift from the code.
"""

import importlib
import inspect
import re
from pathlib import Path

#: (module, names); names=None documents the module's ``__all__``.
SECTIONS = [
    (
        "sklearn_ben",
        [
            "BENClassifier",
            "BENEmbedder",
            "TVN",
            "PlateControlScaler",
            "config_context",
            "get_config",
            "set_config",
            "save",
            "load",
        ],
    ),
    ("sklearn_ben.samplers", None),
    ("sklearn_ben.batchnorm", None),
    ("sklearn_ben.inference", None),
    ("sklearn_ben.distributed", None),
    (
        "sklearn_ben.backbones",
        ["MLP", "SmallCNN", "ResNet", "TorchvisionModel", "strip_classifier"],
    ),
    ("sklearn_ben.losses", None),
    ("sklearn_ben.augment", None),
    ("sklearn_ben.cells", None),
    ("sklearn_ben.metrics", None),
    ("sklearn_ben.profiles", None),
    ("sklearn_ben.datasets", None),
    ("sklearn_ben.io", None),
    ("sklearn_ben.exceptions", None),
]

OUT = Path(__file__).with_name("api.md")


def _signature(obj):
    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return re.sub(r" at 0x[0-9a-f]+>", ">", signature)  # stable across runs


def _methods(cls):
    for name, member in inspect.getmembers(cls, inspect.isfunction):
        if name.startswith("_") or name in {"get_params", "set_params"}:
            continue
        if name.startswith(("set_", "get_metadata")) and name.endswith("_request"):
            continue
        if member.__qualname__.split(".")[0] != cls.__name__ and not (
            member.__module__ or ""
        ).startswith("sklearn_ben"):
            continue
        yield name, member


def _document(module_name, name, obj):
    lines = [f"### `{module_name}.{name}{_signature(obj)}`", ""]
    lines += ["```text", inspect.cleandoc(obj.__doc__ or "(undocumented)"), "```", ""]
    if inspect.isclass(obj):
        for method_name, method in _methods(obj):
            summary = (inspect.getdoc(method) or "").split("\n\n")[0].replace("\n", " ")
            lines.append(f"- `{method_name}{_signature(method)}`: {summary}")
        lines.append("")
    return lines


def render():
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `python docs/gen_api.py`; do not edit.",
        "",
    ]
    for module_name, names in SECTIONS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        lines += [f"## `{module_name}`", ""]
        summary = inspect.getdoc(module)
        if summary and module_name != "sklearn_ben":
            lines += [summary.split("\n\n")[0], ""]
        for name in names or getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if obj is None or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            lines += _document(module_name, name, obj)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
