#!/bin/sh
# Bring the schema up to date before serving: the IdP refuses to start on a stale schema.
# Containers that do not own the database (the sample RPs) set IDP_MIGRATE_ON_START=0.
set -eu

if [ "${IDP_MIGRATE_ON_START:-1}" = "1" ]; then
    idp db upgrade
fi

exec "$@"
