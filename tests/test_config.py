import pytest

from hpcml import config

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", config.__all__)
def test_every_spec_resolves(name):
    assert getattr(config, name).__name__ == name


@pytest.mark.parametrize(
    "make, field",
    [
        (lambda: config.TrainSpec(world_size=0), "world_size"),
        (lambda: config.TrainSpec(arch="vgg"), "arch"),
        (lambda: config.TaintSpec(key="nvidia.com/gpu", value="present", effect=""), "effect"),
    ],
    ids=["train-world-size", "train-arch", "taint-effect"],
)
def test_bad_specs_name_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()


def test_unknown_spec():
    with pytest.raises(AttributeError, match="no spec 'Nope'"):
        config.Nope  # noqa: B018
