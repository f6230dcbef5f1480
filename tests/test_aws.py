import pytest

from hpcml.aws import local_s3, requests as aws_requests, send as aws_send
@pytest.mark.unit
def test_validate_request_names_bad_field():
    ok = {"name": "j", "virtualClusterId": "vc", "executionRoleArn": "arn:aws:iam::1:role/r",
          "releaseLabel": "emr-7.5.0-latest",
          "jobDriver": {"sparkSubmitJobDriver": {"entryPoint": "s3://b/job.py"}}}
    assert aws_requests.validate_request("emr-containers", "start_job_run", ok) is ok
    with pytest.raises(aws_requests.AWSRequestError, match="virtualClusterId"):
        aws_requests.validate_request("emr-containers", "StartJobRun", {k: v for k, v in ok.items() if k != "virtualClusterId"})
    with pytest.raises(aws_requests.AWSRequestError, match="no operation"):
        aws_requests.validate_request("s3", "launch_rocket", {})


@pytest.mark.unit
def test_submit_is_dry_without_credentials(monkeypatch):
    monkeypatch.setattr(aws_send, "has_credentials", lambda: False)
    res = aws_send.submit("s3", "create_bucket", {"Bucket": "b"})
    assert res == {"sent": False, "service": "s3", "operation": "create_bucket", "request": {"Bucket": "b"}}


@pytest.mark.integration
def test_local_s3_roundtrip():
    with local_s3.LocalS3.start() as s3:
        c = s3.client()
        c.create_bucket(Bucket="lake")
        c.put_object(Bucket="lake", Key="raw/a.csv", Body=b"1,2\n")
        assert c.get_object(Bucket="lake", Key="raw/a.csv")["Body"].read() == b"1,2\n"
        proc = s3.proc
    assert proc.poll() is not None  # stopped, no orphan
