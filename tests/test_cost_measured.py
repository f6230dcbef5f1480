"""The cost review's measured inputs (hpcml.cost.measured) read what the stages recorded."""

import pytest

from hpcml import report
from hpcml.cost import measured
from hpcml.train.spec import TrainSpec

pytestmark = pytest.mark.unit


def test_world_size_is_the_recorded_train_spec_parameter(build_tmp):
    assert measured.WORLD_SIZE_PARAM in TrainSpec.__dataclass_fields__
    report.begin("02_horovod_training", params={measured.WORLD_SIZE_PARAM: 3, "workers": 7})
    assert measured.world_size() == 3


@pytest.mark.parametrize("params", [{}, {"workers": 2}, {"world_size": 0}, {"world_size": True}],
                         ids=["none", "other-name", "zero", "bool"])
def test_world_size_missing_names_the_parameter(build_tmp, params):
    report.begin("02_horovod_training", params=params)
    with pytest.raises(report.MissingMetricsError, match=r"params\.world_size .*re-run notebooks/02_horovod_training"):
        measured.world_size()
