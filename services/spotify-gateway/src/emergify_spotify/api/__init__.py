"""HTTP routes of the spotify-gateway: thin, one module per resource."""
