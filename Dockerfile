# One image for every service of the platform; Kubernetes and docker-compose choose the
# process with its arguments, e.g. `energy api run`.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY energy energy
COPY schemas schemas
COPY ingestion ingestion
COPY aggregation aggregation
COPY forecast forecast
COPY dr_coordinator dr_coordinator
COPY api api
COPY sim sim
COPY bench bench
# The index (a CPU-only torch wheel, a mirror) comes from the builder's pip configuration.
RUN python -m venv /opt/venv && /opt/venv/bin/pip install .

FROM python:3.11-slim
RUN groupadd --gid 10001 energy && useradd --uid 10001 --gid energy --no-create-home energy \
 && mkdir -p /var/lib/energy/models /var/lib/energy/archive && chown -R energy:energy /var/lib/energy
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ENERGY_STACK__BIND_HOST=0.0.0.0
USER 10001
WORKDIR /var/lib/energy
CMD ["energy", "--help"]
