"""The sandbox's routes, one module per part of Spotify: ``accounts`` (authorize and token),
``consent`` (the sign-in page), ``web_api`` (``/v1/...``) and ``controls`` (``/_sandbox``,
for tests). A new endpoint goes into the router of its part; ``create_app`` includes them all."""
