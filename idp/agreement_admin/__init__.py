"""Blueprint "agreement_admin": superuser pages per agreement, activation and invitations."""
