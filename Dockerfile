# The connector in a container: one image for every process of the Procfile.
#   docker compose up          (web, worker, release and PostgreSQL; see compose.yaml)
#   docker run -p 8000:8000 -e LEADITIO_WEBHOOK_SECRET=... <image>          (web only, SQLite in /data)
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CONNECTOR_CONFIG=/app/config.example.yaml \
    DATABASE_URL=sqlite:////data/connector.db \
    PORT=8000

WORKDIR /app
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN pip install .
COPY config.example.yaml ./
COPY mappings ./mappings

# Not root: the connector needs to write only its SQLite file (when no PostgreSQL is given) and the
# file destination's output, both under /data.
RUN useradd --create-home --uid 10001 connector && mkdir -p /data && chown connector /data /app
USER connector
VOLUME ["/data"]
EXPOSE 8000

# The Procfile's web process; compose.yaml runs the worker and release processes from the same image.
CMD ["gunicorn", "--config", "python:connector.gunicorn_conf", "connector.web:create_app()"]
