"""The install hints of the optional dependencies: iotdtls is not on PyPI, so no hint may say
`pip install 'iotdtls[...]'` (that would fetch whatever package of that name is there); each
names the dependency with the version range of pyproject.toml's extra."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

import pytest

from iotdtls import _extras

ROOT = Path(__file__).resolve().parent.parent
#: pip install 'iotdtls[...]' or "iotdtls[...]", not preceded by a path.
PYPI_NAME_WITH_EXTRA = re.compile(r"pip install ['\"]?iotdtls\[")


def extra_requirement(extra: str) -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    (requirement,) = project["optional-dependencies"][extra]
    assert isinstance(requirement, str)
    return requirement


@pytest.mark.parametrize(("hint", "extra"), [(_extras.AIOCOAP_HINT, "coap"),
                                             (_extras.UVLOOP_HINT, "fast")])
def test_each_hint_names_the_requirement_of_its_extra(hint: str, extra: str) -> None:
    assert hint.startswith(f"pip install '{extra_requirement(extra)}' ")
    assert f"'/path/to/iotdtls[{extra}]'" in hint


def test_no_source_nor_readme_tells_to_install_iotdtls_from_pypi() -> None:
    texts = [ROOT / "README.md", *sorted((ROOT / "src").rglob("*.py")),
             *sorted((ROOT / "benchmarks").rglob("*.py"))]
    assert [str(path) for path in texts
            if PYPI_NAME_WITH_EXTRA.search(path.read_text(encoding="utf-8"))] == []


def test_importing_iotdtls_coap_without_aiocoap_names_aiocoap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "aiocoap" else real(name)
    )
    for name in [name for name in sys.modules if name.startswith("iotdtls.coap")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError) as caught:
        importlib.import_module("iotdtls.coap")
    assert str(caught.value) == f"iotdtls.coap needs aiocoap: {_extras.AIOCOAP_HINT}"
    assert caught.value.name == "aiocoap"
