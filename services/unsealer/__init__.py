"""vault-unsealer: find every Vault replica and unseal it with the ``vault_unseal_key`` secret.

``machine`` decides (pure), ``discovery`` finds replicas, ``vault_client`` talks to one replica,
``keys`` reads the key file, ``service`` runs the loop; ``bootstrap`` initializes Vault and keeps
the Docker secret.
"""
