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


def test_counted_flops_on_meta_match_the_project_counter():
    from hpcml.train.models import make_model, train_flops_per_sample

    assert measured.resnet50_train_flops(64) == train_flops_per_sample(make_model("resnet50"), (3, 64, 64), batch=1)


@pytest.mark.parametrize("px", [224, 128])
def test_projection_to_224_px(px):
    img_s, how = measured.project_to_224(10.0, px)
    if px == 224:
        assert img_s == 10.0 and "measured at 224 px" in how
    else:
        ratio = measured.resnet50_train_flops(224) / measured.resnet50_train_flops(128)
        assert 2.9 < ratio < 3.1  # ~ (224/128)^2 = 3.06 for a conv net
        assert img_s == pytest.approx(10.0 / ratio) and "counted training FLOPs" in how


def test_gradient_bytes_and_serving_inputs_come_from_the_project():
    from hpcml.serve.spec import ServeSpec

    assert measured.param_count("resnet50") == 25_557_032
    assert measured.grad_bytes("resnet50") == 25_557_032 * 4
    assert measured.hpa_min_replicas() == ServeSpec().min_replicas
    req, resp = measured.payload_bytes("binary")
    assert 784 * 4 < req < 784 * 4 + 300 and 100 < resp < 1000
    assert measured.payload_bytes("json")[0] > req
    with pytest.raises(ValueError, match="encoding"):
        measured.payload_bytes("protobuf")


def _upstream(params02):
    for nb, names in measured.READS.items():
        report.begin(nb, params=params02 if nb.startswith("02") else {})
        for n in names:
            report.record(n, {"node_cpus": 2, "dataset_rows_clean": 1000, "max_rps_at_p99_50ms_is_lower_bound": True,
                              "encoding_rps": {"json": 300.0, "binary": 420.0}}.get(n, 5.0))


def test_read_projects_and_records_where_each_number_came_from(build_tmp):
    _upstream({"world_size": 2, "bench_image_size": 128})
    m = measured.read()
    assert m.resnet50_measured_px == 128 and m.resnet50_img_s_224 < m.resnet50_img_s_per_worker
    assert measured.checkpoint_projection_s() == 5.0 and m.serve_encoding == "binary" and m.serve_rps_is_lower_bound
    assert {"params.bench_image_size", "resnet50_img_s_224"} <= {p["metric"] for p in m.provenance}


def test_read_names_a_missing_image_size(build_tmp):
    _upstream({"world_size": 2})
    with pytest.raises(report.MissingMetricsError, match=r"params\.bench_image_size .*re-run notebooks/02"):
        measured.read()


def test_checkpoint_projection_is_read_only_when_asked(build_tmp):
    _upstream({"world_size": 2, "bench_image_size": 224})
    report.begin("02_horovod_training", params={"world_size": 2, "bench_image_size": 224})
    for n in [n for n in measured.READS["02_horovod_training"] if n != "checkpoint_projection_resnet50_s"]:
        report.record(n, 5.0)
    assert measured.read().resnet50_projection == "measured at 224 px by 02"  # no checkpoint metric needed
    with pytest.raises(report.MissingMetricsError, match="checkpoint_projection_resnet50_s"):
        measured.checkpoint_projection_s()
