"""Scale-out shape on one machine: IdP processes under gunicorn behind nginx (see launch.py)."""
