# The one image recipe for every Emergify service; build arguments choose the service.
# Build from the repository root, e.g.:
#   docker build --build-arg PACKAGE=emergify-ingest --build-arg MODULE=emergify_ingest \
#     --build-arg PORT=8001 -t emergify/ingest .
# docker-compose.yml passes the arguments for each service.
FROM python:3.11-slim-bookworm

# The workspace member to install, the module `python -m` runs, the port it listens on.
ARG PACKAGE
ARG MODULE
ARG PORT
# Debian packages the service needs beyond Python (the stream processor: a JVM for Spark).
ARG APT_PACKAGES=""
ARG JAVA_HOME=""

RUN if [ -n "$APT_PACKAGES" ]; then \
        apt-get update && apt-get install -y --no-install-recommends $APT_PACKAGES \
        && rm -rf /var/lib/apt/lists/*; \
    fi
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_LINK_MODE=copy UV_COMPILE_BYTECODE=1 PYTHONUNBUFFERED=1 EMERGIFY_BIND_HOST=0.0.0.0 \
    JAVA_HOME=${JAVA_HOME} SERVICE_MODULE=${MODULE}
WORKDIR /app

# Dependencies first, from the lock and the members' pyproject files alone, so that a change
# to our source reuses this layer instead of reinstalling every dependency.
COPY pyproject.toml uv.lock .python-version ./
COPY libs/contracts/pyproject.toml libs/contracts/
COPY services/ingest/pyproject.toml services/ingest/
COPY services/stream-processor/pyproject.toml services/stream-processor/
COPY services/recommender/pyproject.toml services/recommender/
COPY services/spotify-gateway/pyproject.toml services/spotify-gateway/
COPY services/api-gateway/pyproject.toml services/api-gateway/
COPY services/dashboard/pyproject.toml services/dashboard/
COPY cli/pyproject.toml cli/
RUN uv sync --frozen --no-dev --no-install-workspace --package "$PACKAGE"

# Then our own packages.
COPY libs ./libs
COPY services ./services
COPY cli ./cli
RUN uv sync --frozen --no-dev --package "$PACKAGE"

ENV PATH=/app/.venv/bin:$PATH
EXPOSE ${PORT}
USER 1000
CMD ["sh", "-c", "exec python -m \"$SERVICE_MODULE\""]
