"""cert-distributor: install the published pair on every node, reload Vault once per certificate."""
