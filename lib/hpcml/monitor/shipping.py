"""Fluent Bit configuration that ships container logs to Elasticsearch and CloudWatch Logs.

Pure text builders; :mod:`hpcml.k8s.monitor` puts them in the Fluent Bit ConfigMap.
The pipeline, per node:

1. ``tail`` every container log of the ``hpcml`` namespace under ``/var/log/containers``
   (the kubelet's symlinks; the ``cri`` multiline parser undoes containerd's
   line framing), with a position DB and a filesystem buffer on the host so a restart
   neither loses nor repeats lines.
2. ``kubernetes`` filter: add pod, namespace, labels (from the API server); with
   ``Merge_Log`` the JSON lines written by :func:`hpcml.monitor.logs.get_logger` become
   top-level fields (``level``, ``stage``, ``run_id``, ``rank`` …) through the
   ``hpcml_json`` parser, so both backends can index and filter on them.
3. Two outputs of the same stream: ``es`` (Amazon OpenSearch / Elasticsearch, signed with
   SigV4 through IRSA, daily ``hpcml-YYYY.MM.DD`` indices) and ``cloudwatch_logs`` (one
   log group, one stream per pod, retention set on creation).
"""

from __future__ import annotations


def parsers_conf() -> str:
    """``parsers.conf``: the JSON log format of hpcml (``ts`` is RFC 3339 UTC with millis)."""
    return "\n".join([
        "[PARSER]",
        "    Name        hpcml_json",
        "    Format      json",
        "    Time_Key    ts",
        "    Time_Format %Y-%m-%dT%H:%M:%S.%LZ",
        "    Time_Keep   On",
        "",
    ])


def fluent_bit_conf(region: str, es_host: str, es_port: int, log_group: str, namespace: str = "hpcml",
                    retention_days: int = 30) -> str:
    """``fluent-bit.conf`` (classic format) with both outputs.

    Args:
        region: AWS region of the OpenSearch domain and CloudWatch Logs.
        es_host: the Elasticsearch/OpenSearch endpoint host name.
        es_port: its HTTPS port.
        log_group: CloudWatch Logs group name.
        namespace: whose container logs are shipped.
        retention_days: CloudWatch retention set when the group is created.
    """
    if retention_days not in (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1827, 3653):
        raise ValueError(f"retention_days={retention_days}: CloudWatch Logs accepts 1, 3, 5, 7, 14, 30, 60, 90, "
                         "120, 150, 180, 365, 400, 545, 731, 1827 or 3653")
    return "\n".join([
        "[SERVICE]",
        "    Flush                     5",
        "    Log_Level                 info",
        "    Daemon                    off",
        "    Parsers_File              /fluent-bit/etc/parsers.conf",
        "    HTTP_Server               On",
        "    HTTP_Listen               0.0.0.0",
        "    HTTP_Port                 2020",
        "    Health_Check              On",
        "    storage.path              /var/fluent-bit/state/flb-storage/",
        "    storage.sync              normal",
        "    storage.backlog.mem_limit 16M",
        "",
        "[INPUT]",
        "    Name              tail",
        "    Tag               kube.*",
        f"    Path              /var/log/containers/*_{namespace}_*.log",
        "    multiline.parser  cri, docker",
        "    DB                /var/fluent-bit/state/flb_kube.db",
        "    Mem_Buf_Limit     50MB",
        "    storage.type      filesystem",
        "    Skip_Long_Lines   On",
        "    Refresh_Interval  10",
        "",
        "[FILTER]",
        "    Name                kubernetes",
        "    Match               kube.*",
        "    Kube_URL            https://kubernetes.default.svc:443",
        "    Kube_Tag_Prefix     kube.var.log.containers.",
        "    Merge_Log           On",
        "    Merge_Parser        hpcml_json",
        "    Keep_Log            Off",
        "    K8S-Logging.Parser  On",
        "    K8S-Logging.Exclude On",
        "    Labels              On",
        "    Annotations         Off",
        "",
        "[OUTPUT]",
        "    Name                es",
        "    Match               kube.*",
        f"    Host                {es_host}",
        f"    Port                {es_port}",
        "    tls                 On",
        "    tls.verify          On",
        "    AWS_Auth            On",
        f"    AWS_Region          {region}",
        "    Logstash_Format     On",
        "    Logstash_Prefix     hpcml",
        "    Suppress_Type_Name  On",
        "    Replace_Dots        On",
        "    Trace_Error         On",
        "    Retry_Limit         5",
        "",
        "[OUTPUT]",
        "    Name                cloudwatch_logs",
        "    Match               kube.*",
        f"    region              {region}",
        f"    log_group_name      {log_group}",
        "    log_stream_prefix   pod.",
        "    log_stream_template $kubernetes['namespace_name'].$kubernetes['pod_name']",
        "    auto_create_group   On",
        f"    log_retention_days  {retention_days}",
        "    Retry_Limit         5",
        "",
    ])
