"""`semdb serve`: a warm search server over one store, with a JSON API and a web page.

    app.py     the Starlette app: JSON API, thumbnails, full-size views, the page (static/)
    params.py  a search's query string to a SearchRequest and back (also the cluster's ingress)
    server.py  binding, the serve.json beacon, running uvicorn (HTTPS with --tls-cert)
    auth.py    the access key of a network server: STORE/serve.key, session cookies, the
               ASGI guards (key, wrong keys slowed per client, cross-site POSTs refused)
    client.py  finding a running server for a store and querying it (no torch, open_clip or
               starlette, so `semdb query` can use it cheaply)

The HTTP API and who can reach it are documented in docs/SERVE.md.
"""
