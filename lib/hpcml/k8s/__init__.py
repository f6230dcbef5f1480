"""Pure builders: typed spec -> Kubernetes/EKS/Slurm definitions (dicts and text).

Each topic module here (``cluster``, ``data``, ``train``, ``tune``, ``serve``,
``monitor``, …) exposes ``render() -> dict[str, object]`` mapping a path relative to
``manifests/`` to its content: a list of dicts (multi-document YAML), one dict (YAML,
or JSON when the path ends in ``.json``) or a string (a script). A module may also
expose ``CRD_REQUIRED``: ``{(apiVersion, kind): ["spec.field.path", ...]}`` — the
fields a custom resource of that kind must carry, checked where no OpenAPI schema
ships offline. :mod:`hpcml.k8s.render` collects them all.
"""
