"""Monitoring: node_exporter on every node (and the GPU sampler), a local Prometheus server and a
PromQL client, alert rules as code (checked and unit-tested with promtool), Alertmanager
delivering to a webhook receiver, and structured JSON logs with a gatherer.

Modules, by layer:

* spec: :mod:`~hpcml.monitor.spec` (``MonitorSpec``, the node sampler's metric names).
* pure: :mod:`~hpcml.monitor.rules` (alert and recording rules), :mod:`~hpcml.monitor.dashboard`
  (Grafana), :mod:`~hpcml.monitor.shipping` (Fluent Bit config), :mod:`~hpcml.monitor.plots`,
  :mod:`~hpcml.monitor.signals` (the training window, rates, alert detection times),
  :mod:`~hpcml.monitor.alerting` (Alertmanager's route tree).
* backend: :mod:`~hpcml.monitor.nodes` (node_exporter per node), :mod:`~hpcml.monitor.node` (the
  GPU sampler), :mod:`~hpcml.monitor.prom` (Prometheus and its client),
  :mod:`~hpcml.monitor.alertmanager`, :mod:`~hpcml.monitor.webhook` (the receiver),
  :mod:`~hpcml.monitor.alertdrills` (link cut, silence),
  :mod:`~hpcml.monitor.promtool` (rule checks and rule unit tests), :mod:`~hpcml.monitor.logs`,
  :mod:`~hpcml.monitor.drill` (the notebook's session and drills).

Nothing starts at import time.
"""
