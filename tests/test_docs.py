"""The docs stay in step with the code."""

import re

import pytest

from tests._scripts import ROOT, load_script


def _gen_api():
    return load_script("docs/gen_api.py")


def test_docs_api_reference_is_up_to_date():
    expected = _gen_api().render()
    actual = (ROOT / "docs" / "api.md").read_text()
    assert actual == expected, "docs/api.md is stale: run python docs/gen_api.py"


@pytest.mark.parametrize(
    "page",
    [
        "README.md",
        "docs/user_guide.md",
        "docs/embeddings.md",
        "docs/profiling.md",
        "benchmarks/README.md",
    ],
)
def test_docs_links_point_to_existing_files(page):
    text = (ROOT / page).read_text()
    base = (ROOT / page).parent
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (base / target).exists(), f"{page} links to missing {target}"
