FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RECOVEA_DATA_DIR=/data \
    RECOVEA_HOST=0.0.0.0 \
    RECOVEA_PORT=8080 \
    RECOVEA_LOG_FORMAT=json

WORKDIR /app
COPY pyproject.toml README.md ./
COPY recovea_proxy ./recovea_proxy
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /data --create-home recovea

USER recovea
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["recovea", "serve", "--host", "0.0.0.0"]
