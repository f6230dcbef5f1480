"""Monitoring: exporters (the node sampler), a local Prometheus server and a PromQL
client, alert rules as code (checked and unit-tested with promtool), and structured
JSON logs with a gatherer.

Submodules: :mod:`~hpcml.monitor.node`, :mod:`~hpcml.monitor.prom`,
:mod:`~hpcml.monitor.rules`, :mod:`~hpcml.monitor.logs`, :mod:`~hpcml.monitor.drill`.
Nothing starts at import time.
"""
