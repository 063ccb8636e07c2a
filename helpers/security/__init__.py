"""Security hooks for the model server and its artefacts.

* ``integrity``: signed SHA-256 manifests of safetensors artefacts.
* ``encryption``: a local CA and TLS certificates, AES-GCM at rest.
* ``auth``: scoped bearer tokens and a per-token rate limit.
* ``isolation``: untrusted models in a child process with limits.
* ``audit``: an append-only, hash-chained log.
* ``hardened``: the book's model server with all of the above.
"""
