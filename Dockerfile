# xds-server as a container (used by docker-compose.yml):
#   docker build -t xds-server .
#   docker run -p 8080:8080 -p 18000:18000 xds-server
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# The dependencies of pyproject.toml first, in their own layer: editing the code does not
# reinstall them (a placeholder package stands in for the code, then goes away).
COPY pyproject.toml README.md ./
RUN mkdir xds_server && touch xds_server/__init__.py \
    && pip install . \
    && pip uninstall --yes xds-server \
    && rm -rf xds_server build *.egg-info

COPY xds_server ./xds_server
RUN pip install --no-deps . && rm -rf build *.egg-info

# Run as an unprivileged user; /data holds the SQLite store (a volume under compose).
RUN useradd --system --uid 10001 --user-group --no-create-home xds \
    && mkdir /data && chown xds:xds /data
USER xds
WORKDIR /data
VOLUME ["/data"]

# 18000: ADS (gRPC); 8080: REST admin API, /healthz, /readyz.
# The admin API has no tokens here (--insecure-admin): publish 8080 on 127.0.0.1 only, or run
# with --admin-tokens FILE (docs/hardening.md).
EXPOSE 18000 8080
CMD ["xds-server", "serve", "--ads-listen", "0.0.0.0:18000", "--admin-listen", "0.0.0.0:8080", \
     "--store", "sqlite:/data/xds-server.db", "--insecure-admin"]
