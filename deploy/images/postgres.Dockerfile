# A local equivalent of postgres:15 for hosts that cannot pull public images: Debian bookworm's
# PostgreSQL 15 with an entrypoint that honours what docker-compose.yml uses of the official
# image (docker-entrypoint.sh, POSTGRES_USER / POSTGRES_DB / POSTGRES_PASSWORD, *.sql in
# /docker-entrypoint-initdb.d, data in /var/lib/postgresql/data, pg_isready).
ARG DEBIAN_ROOT_IMAGE=platform-local/debian:bookworm
FROM ${DEBIAN_ROOT_IMAGE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
    && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
COPY deploy/images/postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
