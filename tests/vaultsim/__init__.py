"""A protocol-level Vault/OpenBao double for tests (not Vault).

It serves the unauthenticated seal/unseal/health/init endpoints and the token-guarded seal endpoint
over real TLS, as Vault and OpenBao behave: shares, threshold, progress and nonce,
duplicate shares ignored, a wrong key detected only at the threshold (400 on Vault >= 1.13, 500 on
older Vault and OpenBao), health codes with their precedence and overrides, the
``{"errors": [...]}`` envelope with ``Content-Type: application/json`` exactly. State lives in a
data directory, so a restarted process comes back initialized and sealed. Standard library only:
it also runs as a container image in the end-to-end tests.

    python -m tests.vaultsim --listen 127.0.0.1:8200 --data DIR --tls-cert FILE --tls-key FILE
"""
