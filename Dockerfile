# One image for the four services; SERVICE picks which one runs.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY shared ./shared
COPY services ./services
COPY tools ./tools
COPY workbench ./workbench
RUN uv sync --frozen --no-dev

FROM node:20-slim AS viewer
RUN mkdir /viewer && cd /viewer && npm pack --silent @asyncapi/react-component@3.2.1 \
    && tar xzf ./*.tgz package/browser/standalone/index.js package/styles/default.min.css

FROM base
COPY --from=viewer /viewer/package/browser/standalone/index.js /viewer/package/styles/default.min.css /app/.local/web/asyncapi/
RUN useradd --system --uid 10001 greenit && chown -R greenit /app
USER greenit
ENV SERVICE=intake GREENIT_HTTP_HOST=0.0.0.0
EXPOSE 8001 8002 8003 8004 8006
HEALTHCHECK --interval=10s --timeout=5s --retries=6 CMD ["/app/.venv/bin/python", "-m", "shared.healthcheck"]
CMD ["sh", "-c", "exec /app/.venv/bin/python -m services.${SERVICE}"]
