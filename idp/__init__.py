"""Connect IdP: one OpenID Connect login for many products and agreements."""
