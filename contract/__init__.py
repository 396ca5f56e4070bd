"""The torch-free contract shared by export and the service: rules, manifest, certificate, policy."""
