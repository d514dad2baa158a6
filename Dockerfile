# The Coalmine image: `coalmine worker` by default; docker-compose.yml builds and runs it.
#   docker build -t coalmine .
#   docker run --rm coalmine --help
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package is built from, so unrelated changes do not invalidate the layer.
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY streams ./streams
COPY sql ./sql
RUN pip install '.[worker,otlp]' && rm -rf /src

# An unprivileged user whose home holds Faust's local state (a volume in docker-compose.yml).
RUN useradd --system --create-home --home-dir /var/lib/coalmine coalmine
USER coalmine
WORKDIR /var/lib/coalmine
ENV COALMINE_HOME=/var/lib/coalmine

EXPOSE 6066
ENTRYPOINT ["coalmine"]
CMD ["worker"]
