FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECOVEA_DATA_DIR=/data \
    RECOVEA_HOST=0.0.0.0 \
    RECOVEA_PORT=8080 \
    RECOVEA_LOG_FORMAT=json

WORKDIR /app
# The runtime dependencies, pinned (deploy/lock.py writes the lock), in their own
# layer; then the package itself, without resolving anything again.
COPY requirements.lock ./
RUN pip install --no-cache-dir -r requirements.lock
COPY pyproject.toml README.md ./
COPY recovea_proxy ./recovea_proxy
RUN pip install --no-cache-dir --no-deps . \
    && useradd --system --uid 10001 --home-dir /data --create-home recovea

USER recovea
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["recovea", "serve", "--host", "0.0.0.0"]
