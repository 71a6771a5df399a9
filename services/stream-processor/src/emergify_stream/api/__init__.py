"""HTTP routes of the admin app."""
