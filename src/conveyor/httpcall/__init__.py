"""The built-in HTTP-call task: "call this URL, wait up to 90 seconds, retry on failure".

Workers serve it once it is registered on their task registry::

    tasks = Tasks()
    register_http_task(tasks)            # serves jobs of the task named "conveyor.http"

and anyone enqueues it, from Python or over the HTTP API, by name with keyword arguments::

    client.enqueue(HTTP_CALL.with_options(queue="hooks"), url="https://example.com/hook",
                   method="POST", json={"order": 7}, callback_url="https://me.example/done")

What happens to one call:

* 2xx (or the codes in ``success``) completes the job with the status, selected headers and
  a size-capped body;
* connection errors, timeouts and 5xx are retried with the task's backoff;
* 4xx other than 408 and 429, and 3xx (redirects are not followed), fail the job at once;
* 429 and 503 with ``Retry-After`` come back after that delay without spending an attempt.

Outbound safety: the host is checked against the allow and deny lists, then resolved, and
every address it resolves to must be public (not loopback, private, link-local, the cloud
metadata address, ...) unless a configured network allows it. The request then goes to
the address that was checked (the ``Host`` header and TLS server name keep the original
name), so a DNS answer that changes between the check and the connection cannot steer it
elsewhere.

One ``aiohttp.ClientSession`` with connection pooling serves every HTTP job of a worker process.
(aiohttp rather than httpx: measured on loopback, httpx 0.28 made about 120 calls/s with
500 in flight, aiohttp about 6,000; its pool scans every connection on each request.)
"""

from .addresses import is_public
from .caller import HTTP_CALL, HTTP_TASK, HttpCaller, HttpCallError, register_http_task
from .outbound import CheckingResolver, OutboundPolicy, OutboundRefused
from .request import DEFAULT_TIMEOUT, MAX_TIMEOUT, HttpRequest, parse_request, retry_after_seconds
from .settings import HttpCallSettings
from .signing import SIGNATURE_HEADER, sign, verify

__all__ = [
    "DEFAULT_TIMEOUT",
    "HTTP_CALL",
    "HTTP_TASK",
    "MAX_TIMEOUT",
    "SIGNATURE_HEADER",
    "CheckingResolver",
    "HttpCallError",
    "HttpCallSettings",
    "HttpCaller",
    "HttpRequest",
    "OutboundPolicy",
    "OutboundRefused",
    "is_public",
    "parse_request",
    "register_http_task",
    "retry_after_seconds",
    "sign",
    "verify",
]
