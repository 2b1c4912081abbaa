"""``pgactions serve``: the runtime as a long-running HTTP service.

A sibling of the runtime that uses it only through its public API (:class:`pgactions.Runtime`,
the manifests, the error catalogue).  One concern per module:

* ``config`` — the service's settings (YAML file, then flags);
* ``app`` — the Starlette application: routes, the one error boundary, the HTTP status table;
* ``status`` — error code → HTTP status, one binding for every code in the catalogue;
* ``principal`` / ``auth`` — who is calling (API key or JWT) and what they may do;
* ``store`` (interface), ``filestore``, ``pgstore``, ``crypto`` — stored connections, API keys and
  idempotency records, secrets encrypted at rest;
* ``untrusted`` — profiles from callers may not reach the service's files, credentials or network;
* ``records`` — PostgREST's URL grammar mapped onto the existing actions;
* ``openapi`` — the OpenAPI 3.1 document generated from the manifests;
* ``metrics`` — Prometheus metrics and the access log;
* ``serve_cli`` / ``keys_cli`` — the ``serve`` and ``keys`` commands.

Its dependencies are in the ``server`` extra: ``pip install 'pgactions[server]'``.
"""
