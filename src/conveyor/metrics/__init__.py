"""What Conveyor measures and exports (issue 16).

* :mod:`.exposition`: the Prometheus text format, written here.
* :mod:`.buckets`: the one set of time buckets every histogram uses.
* :mod:`.fleet`: figures true for the whole fleet, read from Redis (``/metrics`` of the API,
  ``conveyor metrics``).
* :mod:`.worker`: one worker process's own figures (``conveyor worker --metrics-port``);
  :mod:`.processes`: those of ``--processes N``, summed by the supervisor.
* :mod:`.redis_health`: the Redis server's health and the settings that can lose jobs.
* :mod:`.http`: the small HTTP server of ``/metrics`` and ``/livez`` (workers, ``conveyor metrics``).

The counting itself happens where the work does: in the Lua scripts for the fleet's
figures (``ops/scripts/include/metrics.lua``, read by :mod:`conveyor.ops.metrics`), in the
worker's run and acknowledgement paths for a process's own.
"""
