"""Typed configs: YAML + ``--set`` overrides into frozen pydantic settings; bad keys and types are
named in one line, for settings models and for plain dataclasses loaded as settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import pytest
from pydantic import Field

from restoration import config as config_lib
from restoration.config import Settings, at_least


class Inner(Settings):
    section: ClassVar[str] = "inner"

    size: Annotated[int, at_least(1)] = 3
    ratio: float = 0.5
    name: str = "a"
    enabled: bool = False
    pair: tuple[float, float] = (0.0, 1.0)
    kinds: tuple[str, ...] = ("x",)
    limit: int | None = None


class Outer(Settings):
    steps: int = 10
    inner: Inner = Field(default_factory=Inner)


@dataclass(frozen=True)
class Spec:
    """A plain dataclass loaded as settings (as a task's degradation spec is)."""

    size: int = 3
    pair: tuple[float, float] = (0.0, 1.0)
    kinds: tuple[str, ...] = ("x",)
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"spec.size must be >= 1, got {self.size}")


def test_values_are_coerced_to_the_declared_types() -> None:
    config = config_lib.from_dict(Outer, {
        "steps": "20", "inner": {"size": 4.0, "ratio": 1, "name": 7, "enabled": "yes", "pair": [1, "2.5"],
                                 "kinds": "a,b", "limit": "5"},
    })
    assert config == Outer(steps=20, inner=Inner(size=4, ratio=1.0, name="7", enabled=True, pair=(1.0, 2.5),
                                                 kinds=("a", "b"), limit=5))
    assert config_lib.from_dict(Outer, {"inner": {"limit": None}}).inner.limit is None
    assert config_lib.from_dict(Spec, {"size": "4", "pair": "1,2", "kinds": ["p"]}) == Spec(4, (1.0, 2.0), ("p",))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"step": 3}, r"unknown config key step \(did you mean steps\?\); known keys: inner, steps$"),
        ({"inner": {"sise": 3}}, r"unknown config key inner\.sise \(did you mean inner\.size\?\); known keys of inner:"),
        ({"inner": {"x": 1, "y": 2}}, r"unknown config keys inner\.x, inner\.y"),
        ({1: 2}, r"unknown config key 1"),
        ({"steps": "ten"}, r"^steps: expected an integer, got 'ten'$"),
        ({"steps": 2.5}, r"steps: expected an integer, got 2\.5"),
        ({"steps": True}, r"steps: expected an integer, got True"),
        ({"inner": {"ratio": "half"}}, r"^inner\.ratio: expected a number, got 'half'$"),
        ({"inner": {"ratio": False}}, r"inner\.ratio: expected a number, got False"),
        ({"inner": {"enabled": "maybe"}}, r"inner\.enabled: expected true or false, got 'maybe'"),
        ({"inner": {"name": ["a"]}}, r"inner\.name: expected a string, got \['a'\]"),
        ({"inner": {"pair": [1, 2, 3]}}, r"inner\.pair: expected 2 values, got \[1, 2, 3\]"),
        ({"inner": {"pair": "1,2,3"}}, r"inner\.pair: expected 2 values, got \['1', '2', '3'\]"),
        ({"inner": {"pair": 5}}, r"inner\.pair: expected a list, got 5"),
        ({"inner": {"limit": "lots"}}, r"inner\.limit: expected an integer, got 'lots'"),
        ({"inner": 3}, r"inner: expected a mapping of Inner fields, got 3"),
        ({"inner": {"size": 0}}, r"^inner\.size must be >= 1, got 0$"),
        ({"inner": {"size": 0, "sise": 1}}, r"unknown config key inner\.sise"),  # unknown keys first
    ],
)
def test_bad_keys_and_values_are_named(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        config_lib.from_dict(Outer, data)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"sise": 3}, r"unknown config key spec\.sise \(did you mean spec\.size\?\); known keys of spec: extra, kinds, pair, size"),
        ({"size": "x"}, r"^spec\.size: expected an integer, got 'x'$"),
        ({"size": True}, r"^spec\.size: expected an integer, got True$"),
        ({"pair": [1]}, r"^spec\.pair: expected 2 values, got \[1\]$"),
        ({"size": 0}, r"^spec\.size must be >= 1, got 0$"),  # the dataclass's own check, as it says it
        ({"extra": 3}, r"^spec\.extra: expected a mapping, got 3$"),
    ],
)
def test_plain_dataclasses_load_under_the_same_rules(data: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config_lib.from_dict(Spec, data, prefix="spec.")


def test_made_directly_a_bad_value_is_the_same_line_and_an_unknown_keyword_a_type_error() -> None:
    with pytest.raises(ValueError, match=r"^inner\.size must be >= 1, got 0$"):
        Inner(size=0)
    with pytest.raises(TypeError, match=r"unknown config key inner\.sise \(did you mean inner\.size\?\)"):
        Inner(sise=2)
    with pytest.raises(ValueError, match=r"^inner\.size must be >= 1, got -1$"):
        Outer(inner={"size": -1})  # a nested section keeps its full key


def test_settings_are_frozen() -> None:
    config = Outer()
    with pytest.raises(ValueError, match="frozen"):
        config.steps = 3  # type: ignore[misc]


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


def test_restore_settings_round_trip_and_the_ray_pipeline_lives_in_jobs(tmp_path: Path) -> None:
    from jobs.settings import PipelineConfig, RayRestoreConfig, ray_config
    from restoration.restore.settings import RestoreConfig

    for cls, overrides in ((RestoreConfig, ["pipeline.batch_size=2", "output.format=jpg"]),
                           (RayRestoreConfig, ["pipeline.batch_size=2", "pipeline.stages=split", "run.grace_seconds=3"])):
        config = config_lib.load_config(cls, overrides=overrides)
        (tmp_path / "c.yaml").write_text(config_lib.to_yaml(config))
        assert config_lib.load_config(cls, path=tmp_path / "c.yaml") == config and config.pipeline.batch_size == 2
    # The library reads pipeline.batch_size only; the Ray job's keys are refused there, with a pointer.
    with pytest.raises(ValueError, match=r"unknown config key pipeline\.max_actors; known keys of pipeline: "
                                         r"batch_size; the Ray job's pipeline keys .* jobs\.settings\.RayRestoreConfig"):
        config_lib.load_config(RestoreConfig, overrides=["pipeline.max_actors=2"])
    with pytest.raises(ValueError, match=r"^pipeline\.max_actors must be >= pipeline\.min_actors \(3\) or null, got 2$"):
        config_lib.load_config(RayRestoreConfig, overrides=["pipeline.min_actors=3", "pipeline.max_actors=2"])
    with pytest.raises(ValueError, match=r"^pipeline\.stages must be one of auto, fused, split, got 'both'$"):
        config_lib.load_config(RayRestoreConfig, overrides=["pipeline.stages=both"])
    upgraded = ray_config(config_lib.load_config(RestoreConfig, overrides=["pipeline.batch_size=5", "input.max_bytes=9"]))
    assert upgraded.pipeline == PipelineConfig(batch_size=5) and upgraded.input.max_bytes == 9


def test_merge_is_recursive_and_does_not_modify_its_inputs() -> None:
    base = {"a": {"b": 1, "c": 2}, "d": 3}
    override = {"a": {"c": 20}, "e": 5}
    assert config_lib.merge(base, override) == {"a": {"b": 1, "c": 20}, "d": 3, "e": 5}
    assert base == {"a": {"b": 1, "c": 2}, "d": 3} and override == {"a": {"c": 20}, "e": 5}
