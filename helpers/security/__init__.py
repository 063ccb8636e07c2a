"""Security hooks for the model server and its artefacts.

``integrity`` signs and verifies artefacts, ``encryption`` makes TLS
certificates and encrypts checkpoints at rest, ``auth`` checks bearer tokens
and rate-limits them, ``isolation`` runs untrusted models in a child process,
``audit`` keeps an append-only log, and ``hardened`` builds the book's model
server with all of them.
"""
