"""Image files for /image and /edit: checking and converting bytes, no Discord and no API."""
