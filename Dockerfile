# syntax=docker/dockerfile:1
# Two images of mini-iaas, built on Debian 12 and its Python (3.11.2, the one requirements.lock is
# resolved with), each with the versions that requirements.lock pins:
#
#   api     gunicorn (the API), beat, Flower and the migrations; runs as the user mini-iaas. No libvirt:
#           the API-only install (`pip install .`), no `worker` extra, nothing of libvirt built.
#   worker  the celery worker, iaas-events and iaas-admin: `pip install '.[worker]'`, libvirt-python
#           built against libvirt-dev (headers, pkg-config and gcc in the build stage only). It drives
#           the host's libvirtd through its socket, mounted at /var/run/libvirt/libvirt-sock, and runs
#           as root for the reason docs/operations.md (Users) gives.
#
#   docker build --target api -t mini-iaas-api .
#   docker build --target worker -t mini-iaas-worker .
# docker-compose.yml builds both; docs/deploy.md says how to run them.

# ---- the runtime every image starts from: Python and libpq, no compiler ----
FROM debian:bookworm-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/mini-iaas/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    IAAS_SECRETS_DIR=/run/secrets
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libpq5 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# ---- build stage of the API image: compiles psycopg2 (PyPI has it as source only) ----
FROM runtime AS build-api
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-dev gcc libpq-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.lock pyproject.toml ./
# The lock's versions as constraints (name==version): pip installs what `mini-iaas` (plus an extra)
# needs at exactly the pinned versions, and nothing of the extras not asked for. pip, setuptools,
# wheel and packaging first, at their pins and hashes, as the Makefile's venv does.
RUN grep -E '^[a-z0-9]' requirements.lock | cut -d' ' -f1 > /src/constraints.txt \
    && awk '/^[a-z]/ { keep = $1 ~ /^(pip|setuptools|wheel|packaging)==/ } keep' requirements.lock > build-tools.txt \
    && python3 -m venv /opt/mini-iaas \
    && pip install -q --no-cache-dir --require-hashes --no-deps -r build-tools.txt
COPY api ./api
COPY common ./common
COPY worker ./worker
RUN pip install -q --no-cache-dir --no-build-isolation -c constraints.txt . \
    && pip check \
    && if pip show -q libvirt-python 2>/dev/null; then echo "libvirt-python in the api image" >&2; exit 1; fi

# ---- build stage of the worker image: the same plus the `worker` extra (libvirt-python, pycdlib) ----
FROM build-api AS build-worker
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
RUN pip install -q --no-cache-dir --no-build-isolation -c constraints.txt '.[worker]' && pip check

# ---- api: gunicorn, beat, Flower, migrations ----
FROM runtime AS api
RUN useradd --system --user-group --uid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin mini-iaas \
    && install -d -o mini-iaas -g mini-iaas -m 0700 /var/lib/mini-iaas-beat
COPY --from=build-api /opt/mini-iaas /opt/mini-iaas
WORKDIR /app
COPY alembic.ini ./
COPY migrations ./migrations
COPY api/gunicorn_config.py worker/flower_config.py ./
USER mini-iaas
EXPOSE 8080 5555
CMD ["gunicorn", "-c", "/app/gunicorn_config.py", "--bind", "0.0.0.0:8080", "api:create_app()"]

# ---- worker: celery worker, iaas-events, iaas-admin; root, for libvirtd's socket ----
FROM runtime AS worker
# libvirt0 for libvirt-python at run time, qemu-img for image import and inspection.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt0 qemu-utils \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build-worker /opt/mini-iaas /opt/mini-iaas
WORKDIR /app
USER root
CMD ["celery", "-A", "worker.celery_app", "worker", "--pool", "threads", "--hostname", "worker@%h", "--loglevel", "INFO"]
