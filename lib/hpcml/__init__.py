"""hpcml: a runnable reference ML pipeline on a containerized HPC cluster.

One module (or subpackage) per pipeline stage — ``cluster``, ``data``, ``train``,
``tune``, ``serve``, ``monitor``, ``cost`` — plus shared plumbing: ``config``,
``k8s`` (pure manifest builders), ``report`` (metrics and figures), ``pipeline``
(papermill runner) and ``site`` (the HTML walkthrough).

Importing the package has no side effects: directories, servers and loggers are
created by calls that take their paths and ports as arguments.
"""

__version__ = "0.1.0"
