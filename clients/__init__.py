"""Sample relying-party applications for the Connect IdP."""
