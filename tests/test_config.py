"""Typed configs: YAML + ``--set`` overrides into frozen dataclasses; bad keys and types are named."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from restoration import config as config_lib


@dataclass(frozen=True)
class Inner:
    size: int = 3
    ratio: float = 0.5
    name: str = "a"
    enabled: bool = False
    pair: tuple[float, float] = (0.0, 1.0)
    kinds: tuple[str, ...] = ("x",)
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"inner.size must be >= 1, got {self.size}")


@dataclass(frozen=True)
class Outer:
    steps: int = 10
    inner: Inner = field(default_factory=Inner)


def test_values_are_coerced_to_the_declared_types() -> None:
    config = config_lib.from_dict(Outer, {
        "steps": "20", "inner": {"size": 4.0, "ratio": 1, "name": 7, "enabled": "yes", "pair": [1, "2.5"],
                                 "kinds": "a,b", "limit": "5"},
    })
    assert config == Outer(steps=20, inner=Inner(size=4, ratio=1.0, name="7", enabled=True, pair=(1.0, 2.5),
                                                 kinds=("a", "b"), limit=5))
    assert config_lib.from_dict(Outer, {"inner": {"limit": None}}).inner.limit is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"step": 3}, r"unknown config key step \(did you mean steps\?\); known keys: inner, steps"),
        ({"inner": {"sise": 3}}, r"unknown config key inner\.sise \(did you mean inner\.size\?\); known keys of inner:"),
        ({"inner": {"x": 1, "y": 2}}, r"unknown config keys inner\.x, inner\.y"),
        ({1: 2}, r"unknown config key 1"),
        ({"steps": "ten"}, r"steps: expected an integer, got 'ten'"),
        ({"steps": 2.5}, r"steps: expected an integer, got 2\.5"),
        ({"steps": True}, r"steps: expected an integer, got True"),
        ({"inner": {"ratio": "half"}}, r"inner\.ratio: expected a number, got 'half'"),
        ({"inner": {"enabled": "maybe"}}, r"inner\.enabled: expected true or false, got 'maybe'"),
        ({"inner": {"name": ["a"]}}, r"inner\.name: expected a string, got \['a'\]"),
        ({"inner": {"pair": [1, 2, 3]}}, r"inner\.pair: expected 2 values, got \[1, 2, 3\]"),
        ({"inner": {"pair": 5}}, r"inner\.pair: expected a list, got 5"),
        ({"inner": {"limit": "lots"}}, r"inner\.limit: expected an integer, got 'lots'"),
        ({"inner": 3}, r"inner: expected a mapping of Inner fields, got 3"),
        ({"inner": {"size": 0}}, r"inner\.size must be >= 1, got 0"),
    ],
)
def test_bad_keys_and_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_lib.from_dict(Outer, data)


def test_overrides_parse_as_yaml_into_nested_mappings() -> None:
    assert config_lib.parse_overrides(["steps=5", "inner.pair=[1, 2]", "inner.name=", "inner.limit=null"]) == {
        "steps": 5, "inner": {"pair": [1, 2], "name": "", "limit": None},
    }
    with pytest.raises(ValueError, match="--set expects key=value, got 'steps'"):
        config_lib.parse_overrides(["steps"])
    with pytest.raises(ValueError, match="--set expects key=value"):
        config_lib.parse_overrides(["=3"])
    with pytest.raises(ValueError, match=r"--set inner\.pair: cannot parse '\[1, 2' as a YAML value"):
        config_lib.parse_overrides(["inner.pair=[1, 2"])
    with pytest.raises(ValueError, match=r"--set inner\.size: inner is not a section"):
        config_lib.parse_overrides(["inner=3", "inner.size=2"])


def test_precedence_base_then_file_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("steps: 30\ninner:\n  size: 5\n  name: from-file\n")
    config = config_lib.load_config(Outer, path=path, overrides=["inner.name=from-cli"],
                                    base={"steps": 1, "inner": {"ratio": 0.25}})
    assert config == Outer(steps=30, inner=Inner(size=5, ratio=0.25, name="from-cli"))


def test_yaml_files_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        config_lib.load_config(Outer, path=tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping, got list"):
        config_lib.read_yaml(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("steps: [1\n")
    with pytest.raises(ValueError, match="is not valid YAML"):
        config_lib.read_yaml(tmp_path / "broken.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert config_lib.load_config(Outer, path=tmp_path / "empty.yaml") == Outer()


def test_yaml_round_trip(tmp_path: Path) -> None:
    config = Outer(steps=7, inner=Inner(pair=(0.5, 2.0), kinds=("p", "q"), limit=3))
    text = config_lib.to_yaml(config)
    assert "kinds:\n  - p\n  - q" in text  # tuples are written as plain YAML lists
    (tmp_path / "resolved.yaml").write_text(text)
    assert config_lib.load_config(Outer, path=tmp_path / "resolved.yaml") == config


def test_merge_is_recursive_and_does_not_modify_its_inputs() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    override = {"a": {"c": 20}, "e": 5}
    assert config_lib.merge(base, override) == {"a": {"b": 1, "c": 20}, "d": 3, "e": 5}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3} and override == {"a": {"c": 20}, "e": 5}
