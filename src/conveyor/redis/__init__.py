"""Talking to Redis: the transport contract, its implementations, and the executors.

* :mod:`.base` -- the contract (:class:`~.base.SyncTransport`, :class:`~.base.AsyncTransport`);
* :mod:`.endpoint`, :mod:`.connect` -- a URL parsed, and turned into a transport or client;
* :mod:`.resp_sync`, :mod:`.resp_async` -- the lean RESP transports over hiredis (plain servers);
* :mod:`.redispy` -- adapters over redis-py (Sentinel, Cluster, a client you already have);
  :mod:`.replies` puts redis-py's parsed replies back in the shapes Redis sends;
* :mod:`.sentinel` -- following a failover promptly; :mod:`.refusals` -- waiting out a cluster's;
* :mod:`.waits` -- long blocking waits cut into pieces;
* :mod:`.executors` -- run an operation (:mod:`conveyor.ops`) over a transport.

This package shadows nothing: inside Conveyor, ``import redis`` is always redis-py.
"""
