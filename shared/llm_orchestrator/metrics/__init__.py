"""Metrics: Prometheus rendering of database aggregates (``prometheus``), per-process HTTP
request counts (``http``) and the system statistics behind ``/admin/stats`` (``stats``).

Nothing is re-exported: importing ``metrics.http`` (every Lambda does) must not pull in
``prometheus_client``, which only the monitoring group needs.
"""
