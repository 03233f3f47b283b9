# Connect IdP image. The same image also runs the sample relying parties
# (`python -m clients.web_rp`) in docker-compose.yml.
FROM python:3.11-slim

# PYTHONPATH: import the source tree under /app rather than the copy pip puts in
# site-packages, so every entry point (granian, the `idp` script, `python -m`)
# resolves project paths relative to /app, where migrations/ lives.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app

WORKDIR /app

COPY pyproject.toml README* ./
COPY idp ./idp
COPY clients ./clients
COPY migrations ./migrations
RUN pip install .

COPY docker/entrypoint.sh /usr/local/bin/docker-entrypoint
# /keys is created here so a fresh named volume mounted on it inherits the
# non-root owner; otherwise Docker creates it root-owned and key generation fails.
RUN chmod 0755 /usr/local/bin/docker-entrypoint \
    && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home idp \
    && mkdir -p /keys \
    && chown idp:idp /keys

USER idp
ENV IDP_KEYS_DIR=/keys
EXPOSE 8000

ENTRYPOINT ["/usr/local/bin/docker-entrypoint"]
# granian (Rust HTTP, WSGI) answers the same requests with a third less CPU than gunicorn's sync workers
# (bench/README.md). One worker per core, threads to overlap database and Redis round trips; the app writes
# its own access log (with the request id), so granian's is off. `gunicorn idp.wsgi:app` works as well.
CMD ["granian", "--interface", "wsgi", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", \
     "--blocking-threads", "4", "--respawn-failed-workers", "--no-access-log", "idp.wsgi:app"]
