# The Vault double (tests/vaultsim) as an image that a stack can run in place of hashicorp/vault.
# A stand-in, for machines that cannot pull the real image: it speaks Vault's seal/unseal/health
# protocol over real TLS. It reads the same VAULT_LOCAL_CONFIG (listener address, tls_cert_file,
# tls_key_file) as the official image and ships a `vault status` for the stack's healthcheck.
# Built by tests/support/e2e_images.py from a context holding tests/vaultsim and tests/e2e/images.
ARG BASE_IMAGE=certflow:latest
FROM ${BASE_IMAGE}
USER root
COPY tests/__init__.py /opt/vaultsim/tests/__init__.py
COPY tests/vaultsim/ /opt/vaultsim/tests/vaultsim/
COPY tests/e2e/images/vaultsim_entry.py /opt/vaultsim/entry.py
COPY tests/e2e/images/vault_status.py /usr/local/bin/vault
RUN chmod 0755 /usr/local/bin/vault \
 && sed -i '1s|.*|#!/opt/certflow/bin/python3|' /usr/local/bin/vault \
 && mkdir -p /vault/certs /vault/file
WORKDIR /opt/vaultsim
LABEL org.opencontainers.image.title="certflow Vault double (a test stand-in, not Vault)"
# The official image's entrypoint runs the server as root-then-vault; the double runs as root so
# it can read whatever owner the distributor gives the key.
HEALTHCHECK NONE
ENTRYPOINT ["python3", "/opt/vaultsim/entry.py"]
CMD ["server"]
