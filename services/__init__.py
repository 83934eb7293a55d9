"""The certflow services: reloader, distributor, unsealer (one package each) and the CLI."""
