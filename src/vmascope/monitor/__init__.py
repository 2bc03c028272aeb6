"""Monitoring a host: readings of every process's map count, their history, forecasts of
the time to exhaustion, and a Prometheus exporter.

* :mod:`.reading` reads the whole host (map count, RSS, comm of every process) cheaply;
* :mod:`.rates` follows processes across readings (growth in VMAs per minute);
* :mod:`.causes` runs the VMA budget on a few processes (the fragmentation cause);
* :mod:`.top` holds the state of ``vmascope top`` (sort order, cached causes);
* :mod:`.store` keeps samples in SQLite, :mod:`.forecast` fits the trend, :mod:`.watch`
  samples targets, follows them across restarts and acts on a threshold;
* :mod:`.exporter` serves readings to Prometheus.
"""
