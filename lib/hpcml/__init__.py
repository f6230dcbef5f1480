"""hpcml: a runnable reference ML pipeline on a containerized HPC cluster.

One subpackage per pipeline stage — ``cluster``, ``data``, ``train``, ``tune``,
``serve``, ``monitor``, ``cost`` — each with its typed specs in ``spec``, plus shared
plumbing: ``k8s`` (pure manifest builders), ``aws`` (request bodies, sending them, a
local S3 endpoint), ``proc`` (managed processes), ``paths``, ``specbase``, ``config``
(every spec in one place), ``report`` (metrics and figures), ``pipeline`` (papermill
runner), ``site`` (the HTML walkthrough) and ``layers`` (the layer contract: spec <
pure < backend < app, imports point down; docs/architecture.md has the module map).

Importing the package has no side effects: directories, servers and loggers are
created by calls that take their paths and ports as arguments.
"""

__version__ = "0.1.0"
