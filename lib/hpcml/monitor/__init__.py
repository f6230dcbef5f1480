"""Monitoring: exporters (the node sampler), a local Prometheus server and a PromQL
client, alert rules as code (checked and unit-tested with promtool), and structured
JSON logs with a gatherer.

Modules, by layer:

* spec: :mod:`~hpcml.monitor.spec` (``MonitorSpec``, the node sampler's metric names).
* pure: :mod:`~hpcml.monitor.rules` (alert and recording rules), :mod:`~hpcml.monitor.dashboard`
  (Grafana), :mod:`~hpcml.monitor.shipping` (Fluent Bit config), :mod:`~hpcml.monitor.plots`,
  :mod:`~hpcml.monitor.signals` (the training window, rates, alert detection times).
* backend: :mod:`~hpcml.monitor.node`, :mod:`~hpcml.monitor.prom` (Prometheus and its client),
  :mod:`~hpcml.monitor.promtool` (rule checks and rule unit tests), :mod:`~hpcml.monitor.logs`,
  :mod:`~hpcml.monitor.drill` (the notebook's session and drills).

Nothing starts at import time.
"""
