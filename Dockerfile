# syntax=docker/dockerfile:1
# One image for every service and the `realtybot` command. The first argument names what
# runs: ingress, router, dedup, brain, outbound (`python -m services.<name>`) or realtybot
# (the operator's CLI, e.g. `realtybot migrate`). Kubernetes probes /healthz and /readyz,
# so the image has no HEALTHCHECK of its own.

FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
RUN python -m venv /opt/realtybot
ENV PATH=/opt/realtybot/bin:$PATH

# Dependencies first, so a code change does not reinstall them.
COPY pyproject.toml requirements.lock ./
RUN mkdir -p shared services cli \
    && touch shared/__init__.py services/__init__.py cli/__init__.py \
    && pip install --constraint requirements.lock . \
    && pip uninstall --yes realtybot \
    && rm -rf build realtybot.egg-info shared services cli

COPY shared ./shared
COPY services ./services
COPY cli ./cli
# Bytecode is compiled here: at run time the root filesystem is read-only.
RUN pip install --constraint requirements.lock --no-deps . \
    && python -m compileall -q /opt/realtybot/lib


FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="realtybot" \
      org.opencontainers.image.description="Multi-tenant WhatsApp sales assistant for real-estate agents"

# A fixed, unprivileged identity: Kubernetes checks runAsNonRoot against the numeric UID.
RUN groupadd --system --gid 10001 realtybot \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin realtybot

COPY --from=build /opt/realtybot /opt/realtybot
COPY --chmod=0555 deploy/docker/entrypoint.sh /usr/local/bin/realtybot-entrypoint

ENV PATH=/opt/realtybot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    LOG_FORMAT=json

WORKDIR /tmp
USER 10001:10001
EXPOSE 8080 8081 9101 9102 9103 9104

ENTRYPOINT ["realtybot-entrypoint"]
CMD ["--help"]
