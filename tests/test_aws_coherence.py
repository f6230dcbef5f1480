"""The AWS side agrees with itself: one region (hpcml.aws.account.REGION) in every rendered
manifest and request, in every spec's default and in the price snapshot the cost models use."""

from __future__ import annotations

import json
import re

import pytest

from hpcml import paths
from hpcml.aws import account
from hpcml.k8s import render
from hpcml.k8s import train as kt
from hpcml.train.targets import layout

pytestmark = pytest.mark.unit

#: An AWS region name (``us-east-1``, ``eu-central-2``, ``us-gov-west-1``) or an availability zone
#: of one (``us-east-1a``); group 1 is the region.
REGION_RE = re.compile(r"(?<![a-z0-9-])((?:us|eu|ap|sa|ca|me|af|il|mx|cn)(?:-gov|-iso[a-z]?)?-"
                       r"(?:north|south|east|west|central|northeast|southeast|northwest|southwest)-\d)"
                       r"([a-z]?)(?![a-z0-9])")


def regions_in(text: str) -> set[str]:
    """Every region named in ``text`` (zones count as their region)."""
    return {m.group(1) for m in REGION_RE.finditer(text)}


@pytest.mark.parametrize("text,found", [
    ("arn:aws:kms:us-west-2:111122223333:key/x", {"us-west-2"}),
    ("availabilityZones: [us-east-1a, us-east-1b]", {"us-east-1"}),
    ("111122223333.dkr.ecr.eu-central-1.amazonaws.com/hpcml-train:0.1.0", {"eu-central-1"}),
    ("s3.us-gov-west-1.amazonaws.com", {"us-gov-west-1"}),
    ("name: hpcml-train-cuda, replicas: 2", set()),
], ids=["arn", "zones", "ecr", "gov", "none"])
def test_region_pattern(text, found):
    assert regions_in(text) == found


def test_every_rendered_manifest_and_request_names_the_one_region():
    out = render.render_all()
    named = {rel: regions_in(text) for rel, text in out.items()}
    assert {r for rs in named.values() for r in rs} == {account.REGION}, \
        {rel: rs for rel, rs in named.items() if rs - {account.REGION}}
    # the cluster, the IAM conditions, ECR, SageMaker and log shipping each name it
    for rel in ("eks/cluster.yaml", "iam/hpcml-sagemaker.json", "serve/sagemaker-create-model.json",
                "train/batch-register-job-definition.json", "monitoring/fluent-bit.yaml"):
        assert named[rel] == {account.REGION}, rel


def test_checked_in_manifests_name_the_one_region():
    root = paths.manifests_dir()
    bad = {str(p.relative_to(root)): regions_in(p.read_text()) - {account.REGION}
           for p in sorted(root.rglob("*")) if p.is_file()}
    assert not {k: v for k, v in bad.items() if v}


def test_requests_built_outside_the_manifests_name_the_one_region():
    for spec in (kt.PRODUCTION_SPEC, kt.CPU_SPEC):
        assert regions_in(json.dumps(layout.batch_requests(spec))) == {account.REGION}
    assert regions_in(layout.ECR_IMAGE + " " + layout.ECR_CUDA_IMAGE) == {account.REGION}


def test_spec_defaults_are_the_one_region():
    from hpcml.cluster.spec import ClusterSpec, default_cluster
    from hpcml.data.spec import DataJobSpec
    from hpcml.monitor.spec import MonitorSpec
    from hpcml.serve.spec import ServeSpec

    for spec in (ClusterSpec(), default_cluster(), DataJobSpec(), MonitorSpec(), ServeSpec()):
        assert spec.region == account.REGION, type(spec).__name__
    assert all(z.startswith(account.REGION) for z in default_cluster().availability_zones)
    assert regions_in(MonitorSpec().es_host) == {account.REGION}


def test_price_snapshot_prices_the_one_region():
    snap = json.loads((paths.repo_root() / "lib/hpcml/cost/data/prices_snapshot.json").read_text())
    assert snap["region"] == account.REGION


def test_a_cluster_in_another_region_is_caught():
    """The check fails on a rendering whose cluster sits elsewhere (the EKS/IAM side in us-west-2
    while ECR and SageMaker name us-east-1, as before)."""
    from hpcml.cluster.spec import ClusterSpec, default_cluster
    from hpcml.k8s import cluster as kc

    base = default_cluster()
    other = ClusterSpec(region="us-west-2", availability_zones=account.availability_zones("us-west-2"),
                        node_groups=base.node_groups, namespaces=base.namespaces)
    text = json.dumps(kc.render(other)["eks/cluster.yaml"])
    assert regions_in(text) == {"us-west-2"} != {account.REGION}


def test_opensearch_endpoint_in_another_region_is_refused():
    from hpcml.monitor.spec import MonitorSpec

    with pytest.raises(ValueError, match="MonitorSpec.es_host: expected an OpenSearch endpoint in region"):
        MonitorSpec(es_host="search-hpcml-logs.us-west-2.es.amazonaws.com")
