"""The README stays true: every job config field is documented in its table."""

from __future__ import annotations

from pydantic import BaseModel

from jobs.config import JobConfig
from tests.helpers import REPO


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += _fields(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_every_config_field_is_in_the_readme():
    readme = (REPO / "README.md").read_text()
    missing = [f for f in _fields(JobConfig) if f"| `{f}` |" not in readme]
    assert not missing, f"README's job config table lacks: {missing}"


def test_quick_start_is_two_make_commands():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    makefile = (REPO / "Makefile").read_text()
    assert "\ndemo:" in makefile and "\ntest:" in makefile
