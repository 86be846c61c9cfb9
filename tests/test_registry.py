"""The shared registry: argument errors are the user's, errors inside a constructor are bugs."""

from typing import Any, cast

import pytest

from wsi_ncmi.errors import ConfigError
from wsi_ncmi.losses import NCMILoss, build_loss
from wsi_ncmi.registry import Registry


class _Thing:
    size: float


def _registry() -> Registry[_Thing]:
    registry: Registry[_Thing] = Registry("thing")

    @registry.register("good")
    class Good(_Thing):
        def __init__(self, size: int, *, scale: float = 1.0) -> None:
            self.size = size * scale

    @registry.register("buggy")
    class Buggy(_Thing):
        def __init__(self, size: int) -> None:
            # A bug: TypeError inside the constructor (the cast lets mypy pass it).
            self.size = cast(Any, size) + "1"

    return registry


def test_unknown_or_missing_arguments_are_config_errors():
    registry = _registry()
    assert registry.build("good", size=2).size == 2.0
    with pytest.raises(ConfigError, match="invalid arguments for thing 'good'"):
        registry.build("good", size=2, colour="red")
    with pytest.raises(ConfigError, match="invalid arguments for thing 'good'"):
        registry.build("good")
    with pytest.raises(ConfigError, match="thing must be one of"):
        registry.build("nope")


def test_a_type_error_inside_the_constructor_is_not_disguised_as_a_user_error():
    with pytest.raises(TypeError, match="unsupported operand"):
        _registry().build("buggy", size=2)


@pytest.mark.parametrize(
    ("name", "typo", "meant"),
    [
        ("ncmi_mil", "tempreature", "temperature"),
        ("ncmi_authors", "center_decy", "center_decay"),
        ("focal", "gama", "gamma"),
    ],
)
def test_a_misspelt_loss_argument_names_the_closest_one(name: str, typo: str, meant: str) -> None:
    with pytest.raises(ConfigError, match=rf"unknown '{typo}' \(did you mean '{meant}'\?\)"):
        build_loss(name, num_classes=4, **{typo: 0.2})
    # An option group changes ncmi_mil's own defaults field by field, with the same check.
    loss = build_loss("ncmi_mil", num_classes=4, schedule={"damping": 0.5})
    assert isinstance(loss, NCMILoss)
    assert (loss.state.damping, loss.state.mode, loss.state.warmup_epochs) == (
        0.5,
        "alternating",
        1,
    )
    with pytest.raises(
        ConfigError, match=r"schedule has no field 'dampign' \(did you mean 'damping'\?\)"
    ):
        build_loss("ncmi_mil", num_classes=4, schedule={"dampign": 0.5})


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("ncmi_mil", "damping", "schedule.damping"),
        ("ncmi", "centroids", "schedule.mode"),
        ("ncmi", "reduction", "form.reduction"),
        ("ncmi", "anchor_scale", "anchors.scale"),
        ("cmic", "warmup_steps", "schedule.warmup_steps"),
    ],
)
def test_an_older_flat_argument_says_where_it_went(name: str, old: str, new: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_loss(name, num_classes=4, **{old: 0.5})
    assert str(info.value) == f"invalid arguments for loss {name!r}: {old!r} was renamed to {new!r}"


@pytest.mark.slow  # a fresh interpreter (3 s of imports)
def test_importing_a_registry_module_alone_lists_every_built_in() -> None:
    """The built-ins register through their package, not through the registry module."""
    import subprocess
    import sys

    code = (
        "from wsi_ncmi.mil.registry import list_aggregators\n"
        "from wsi_ncmi.losses.registry import list_losses\n"
        "print(list_aggregators(), list_losses())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    aggregators = ["abmil", "clam_sb", "dsmil", "max", "mean", "transmil"]
    assert done.stdout.startswith(str(aggregators))
    for name in ("ce", "focal", "ncmi", "ncmi_authors", "ncmi_mil", "weighted_ce"):
        assert repr(name) in done.stdout.split("] [", 1)[1]
