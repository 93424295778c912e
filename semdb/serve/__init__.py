"""`semdb serve`: a warm search server over one store, with a JSON API and a web page.

    app.py     the Starlette app: JSON API, thumbnails, full-size views, the page (static/)
    server.py  binding, the serve.json beacon, running uvicorn
    client.py  finding a running server for a store and querying it (standard library only,
               so `semdb query` can use it without importing torch, open_clip or starlette)

The HTTP API is documented in docs/INTERFACES.md ("HTTP API").
"""
