"""hpcml.review.quota_table: one row per ResourceQuota, each judged on what runs under it at once."""

import copy

import pytest

from hpcml import review
from hpcml.k8s import coherence as co

pytestmark = pytest.mark.unit

OUT = co.rendered()


def _quota(out, name):
    return next(d for d in out["cluster/quota.yaml"] if d["kind"] == "ResourceQuota" and d["metadata"]["name"] == name)


def _totals(out, ref):
    w = next(w for w in co.workloads(out) if w.ref == ref)
    return co.workload_totals(w)


def test_one_row_per_resource_quota_and_every_one_fits():
    rows = {r["quota"]: r for r in review.quota_table(OUT)}
    names = [d["metadata"]["name"] for d in OUT["cluster/quota.yaml"] if d["kind"] == "ResourceQuota"]
    assert list(rows) == names and len(names) == 3
    assert all(r["fits"] and r["over"] == [] for r in rows.values()), rows


def test_serving_and_the_gpu_job_are_counted_by_different_quotas():
    rows = {r["quota"]: r for r in review.quota_table(OUT)}
    serving, batch = rows["hpcml-serving-quota"], rows["hpcml-quota"]
    assert serving["counts"] == "pods of PriorityClass hpcml-serving"
    assert batch["counts"].startswith("pods whose PriorityClass is not hpcml-serving")
    assert set(serving["workloads"]) == {"Deployment/hpcml-serve", "InferenceService/mnist"}
    assert "MPIJob/resnet50-train" in batch["workloads"] and "Deployment/hpcml-serve" not in batch["workloads"]
    # serving at its HPA maximum, both forms, from the workloads' own totals
    want = sum(_totals(OUT, r)["requests.cpu"] for r in serving["workloads"])
    assert serving["cpu"] == want and serving["cpu_hard"] == co.quantity(_quota(OUT, "hpcml-serving-quota")
                                                                          ["spec"]["hard"]["requests.cpu"])
    # the batch quota: postgresql (resident) plus the largest batch job, the GPU MPIJob
    gpu_job = _totals(OUT, "MPIJob/resnet50-train")
    assert batch["cpu"] == _totals(OUT, "StatefulSet/postgresql")["requests.cpu"] + gpu_job["requests.cpu"]
    assert batch["gpus"] == gpu_job["requests.nvidia.com/gpu"] <= batch["gpus_hard"]
    assert "MPIJob/resnet50-train" in batch["cpu_by"]


def test_the_object_count_quota_counts_the_rendered_jobs():
    row = next(r for r in review.quota_table(OUT) if r["quota"] == "hpcml-objects-quota")
    jobs = sum(1 for _, d in co.k8s_docs(OUT) if d["kind"] == "Job" and d["apiVersion"] == "batch/v1"
               and d["metadata"].get("namespace") == "hpcml")
    assert jobs > 0 and row["objects"] == f"count/jobs.batch {jobs} of 50"
    assert row["counts"] == "every pod and object" and row["cpu"] is None and row["cpu_hard"] is None


def test_one_unscoped_quota_does_not_fit_serving_beside_the_gpu_job():
    from hpcml.cluster.spec import default_cluster
    from hpcml.k8s import cluster as kc

    out = copy.deepcopy(OUT)
    ns = next(n for n in default_cluster().namespaces if n.name == "hpcml")
    lr = next(d for d in out["cluster/quota.yaml"] if d["kind"] == "LimitRange")
    out["cluster/quota.yaml"] = [*kc.resource_quotas(ns, serving=None), lr]
    (row,) = review.quota_table(out)
    assert not row["fits"] and row["cpu"] == row["cpu_unscoped"]
    assert "requests.cpu 90 > 64" in row["over"], row["over"]
    assert {"Deployment/hpcml-serve", "MPIJob/resnet50-train"} <= set(row["workloads"])
    # the scoped quotas' own counterfactual column gives the same figure
    scoped = {r["quota"]: r for r in review.quota_table(OUT)}
    assert scoped["hpcml-quota"]["cpu_unscoped"] == row["cpu"] > scoped["hpcml-quota"]["cpu_hard"]


def test_a_quota_too_small_is_the_only_row_that_does_not_fit():
    out = copy.deepcopy(OUT)
    _quota(out, "hpcml-serving-quota")["spec"]["hard"]["requests.memory"] = "30Gi"
    rows = {r["quota"]: r for r in review.quota_table(out)}
    assert rows["hpcml-serving-quota"]["over"] == ["requests.memory 40Gi > 30Gi"]
    assert [q for q, r in rows.items() if not r["fits"]] == ["hpcml-serving-quota"]


def test_too_many_objects_do_not_fit():
    out = copy.deepcopy(OUT)
    _quota(out, "hpcml-objects-quota")["spec"]["hard"]["count/jobs.batch"] = "1"
    row = next(r for r in review.quota_table(out) if r["quota"] == "hpcml-objects-quota")
    assert not row["fits"] and row["over"][0].startswith("count/jobs.batch ")


def test_a_namespace_without_a_quota_is_named():
    with pytest.raises(ValueError, match="namespace 'nowhere' has no ResourceQuota"):
        review.quota_table(OUT, namespace="nowhere")


@pytest.mark.parametrize("spec,words", [
    ({}, "every pod and object"),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["a"]}]}},
     "pods of PriorityClass a"),
    ({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "DoesNotExist"}]}},
     "pods without a PriorityClass"),
    ({"scopes": ["NotBestEffort"]}, "NotBestEffort Exists"),
])
def test_quota_scope_in_words(spec, words):
    assert review.quota_scope({"spec": {"hard": {}, **spec}}) == words


SERVE, TRAIN = "Deployment/hpcml-serve", "MPIJob/resnet50-train"


def test_quota_claims_render_from_the_rows_and_check(build_tmp):
    from hpcml import report

    report.begin("07_architecture_review")
    text = review.quota_claims(review.quota_table(OUT), serve=SERVE, train=TRAIN).text
    m = report.load("07_architecture_review")["metrics"]
    assert m["quotas"]["value"] == 3 and m["quotas_fitting_at_once"]["value"] == 3
    assert m["quotas_counting_serve_and_training"]["value"] == 0
    assert m["training_quota_requests_cpu"]["value"] == 64 and m["unscoped_at_once_cpu"]["value"] == 90
    assert "`hpcml-serving-quota` counts pods of PriorityClass hpcml-serving. What runs under it at once requests " \
           "40 of 48 CPUs (Deployment/hpcml-serve 20 + InferenceService/mnist 20), 40 of 48 GiB, 0 of 0 GPUs, " \
           "40 of 48 pods (resident workloads at their maximum; per figure, the batch job that uses the most of it): " \
           "it admits them." in text
    assert ("`hpcml-objects-quota` counts every pod and object. It caps object counts only "
            "(count/jobs.batch 4 of 50): it admits them.") in text
    assert "counted by separate quotas; serving at its HPA maximum beside the GPU job is admitted (3 of 3" in text
    assert "would request 90 CPUs at once" in text and "they would not fit" in text
    assert report.check_conclusions()["serving_scales_beside_training"]


def test_quota_claims_say_so_when_one_quota_counts_everything(build_tmp):
    from hpcml import report
    from hpcml.cluster.spec import default_cluster
    from hpcml.k8s import cluster as kc

    out = copy.deepcopy(OUT)
    ns = next(n for n in default_cluster().namespaces if n.name == "hpcml")
    out["cluster/quota.yaml"] = [*kc.resource_quotas(ns, serving=None)]
    report.begin("07_architecture_review")
    text = review.quota_claims(review.quota_table(out), serve=SERVE, train=TRAIN).text
    assert "does not admit them (requests.cpu 90 > 64" in text
    assert "counted by one quota; serving at its HPA maximum beside the GPU job is not admitted (0 of 1" in text
    with pytest.raises(AssertionError, match="serving_scales_beside_training: the text states"):
        report.check_conclusions()


def test_quota_claims_name_a_workload_no_quota_counts(build_tmp):
    from hpcml import report

    report.begin("07_architecture_review")
    with pytest.raises(ValueError, match="no ResourceQuota counts 'MPIJob/ghost'"):
        review.quota_claims(review.quota_table(OUT), serve=SERVE, train="MPIJob/ghost")
