"""Legacy users: agreement usernames and passwords from before the Connect login."""
