# The tweet-sentiment API as a lean container: `make docker` (needs the bundles from `make export`).
# builder: installs the serving dependencies (setup.cfg's base install_requires, pinned by
#          constraints.txt, binary wheels only) into /opt/venv from the wheelhouse wheels/ in the
#          build context (`make wheels` downloads it on the host): the build needs no network.
#          It checks every bundle's manifest.
# Both stages run the base's `python3`: the official image (default) or the Debian-built one of
# deploy/image/base.sh (`--build-arg PYTHON_IMAGE=tweet-sentiment-base:bookworm`, no registry).
# runtime: python slim + that venv + the `service` package + every bundle under models/. No
#          TensorFlow, no transformers, no compilers, no pip. tests/deploy checks all of this
#          without an engine.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The served bundles, the first being the default model: every models/*/ folder with a
# manifest.json. `make docker` passes the list it finds; this default is the shipped set
# (tests/deploy keeps it equal to the repository's bundles).
ARG BUNDLES=/app/models/sentiment-3class,/app/models/sentiment-binary

FROM ${PYTHON_IMAGE} AS builder
ARG BUNDLES
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY setup.cfg constraints.txt ./
COPY wheels/ /wheels/
# Only the base install_requires: the project's extras (train, export, ...) pull in TensorFlow.
# The venv gets no pip of its own: a throwaway venv's pip (ensurepip's, which Debian's python3
# also has) installs into it, from the wheelhouse only.
RUN python3 -c "import configparser; c = configparser.ConfigParser(); c.read('setup.cfg'); print(c['options']['install_requires'].strip())" > requirements.txt \
    && python3 -m venv --without-pip /opt/venv \
    && python3 -m venv /build/pip \
    && /build/pip/bin/python -m pip --python /opt/venv/bin/python install --no-index --find-links=/wheels --only-binary=:all: -c constraints.txt -r requirements.txt \
    && /build/pip/bin/python -m pip --python /opt/venv/bin/python check
WORKDIR /app
COPY service/ service/
COPY models/ models/
# Fail the build, not the rollout, on a bundle that is copied but not served, does not match its
# manifest or shares another's name (checked again at every start); precompile the service so a
# read-only root filesystem costs nothing.
RUN for found in models/*/manifest.json; do \
        case ",${BUNDLES}," in *",/app/${found%/manifest.json},"*) ;; \
            *) echo "${found%/manifest.json} is not in BUNDLES=${BUNDLES} (make docker lists every bundle)" >&2; exit 1 ;; \
        esac; \
    done \
    && /opt/venv/bin/python -c "import sys; from service.registry import load_bundles; load_bundles(sys.argv[1].split(','))" "${BUNDLES}" \
    && /opt/venv/bin/python -m compileall -q --invalidation-mode checked-hash service


FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG BUNDLES
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="tweet-sentiment" \
      org.opencontainers.image.description="Tweet sentiment HTTP API: DistilBERT, ONNX Runtime int8, Starlette" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it; the app owns no file it runs.
# The base's own pip (and ensurepip's wheels) go: the runtime installs nothing.
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid app --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && rm -rf /usr/local/bin/pip* /usr/local/lib/python3*/site-packages/pip* \
       /usr/local/lib/python3*/ensurepip/_bundled /usr/share/python-wheels

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

# Settings are environment variables (service/settings.py); override them with `docker run -e`.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SENTIMENT_BUNDLES=${BUNDLES} \
    SENTIMENT_HOST=0.0.0.0 \
    SENTIMENT_PORT=8000

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# No curl in a slim image: the venv's Python asks the liveness endpoint.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('SENTIMENT_PORT', '8000') + '/health', timeout=2)"]

# Exec form: the server is PID 1 and gets SIGTERM itself, so it drains (/ready turns 503,
# in-flight requests finish) before it exits. The same command runs outside Docker.
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "service"]
