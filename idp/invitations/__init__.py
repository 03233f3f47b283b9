"""Invitations to join an agreement, sent by e-mail."""
