"""The admin API (FastAPI), built by ``app.create_admin_app``.

- ``routes/``: one router per resource family (documents of every kind, apply, history and
  rollback, proxies, events, health, metrics);
- ``middleware/``: bearer tokens, the body size limit, the revision header, request metrics;
- ``openapi/``: the response fragments and body schemas of ``api/openapi.json``;
- the rest is what the routers share: the injected ``context``, ``services`` (checker and
  writer), request ``body`` decoding, ``documents`` and ``views`` in and out, ``problem``
  details and the ``errors`` handlers, and ``kinds`` (what the API adds to the model's table
  of kinds).
"""
