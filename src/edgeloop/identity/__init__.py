"""Identity: our own PKI, certificates for devices and services, revocation."""
