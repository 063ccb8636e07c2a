"""The book's model server: a FastAPI app over a versioned model registry.

``app.create_app`` builds the ASGI app, ``launch.start_server`` runs it under
uvicorn on loopback, ``hooks`` defines the extension points (authentication,
rate limiting, audit, artefact verification) and ``registry`` stores model
versions as safetensors files named by their SHA-256.
"""
