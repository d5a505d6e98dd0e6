# The compose-ckpt sidecar. Built offline from wheels made on the host (`make sidecar-image`):
# nothing is downloaded inside the build. BASE: any image with python3 >= 3.11 and its venv
# module, of the same Python version as the wheels (binary wheels are per version).
ARG BASE=python:3.12-slim
FROM ${BASE}

COPY build/wheels /tmp/wheels
RUN python3 -m venv /opt/compose-ckpt \
    && /opt/compose-ckpt/bin/pip install --no-index --no-cache-dir --disable-pip-version-check \
       --find-links /tmp/wheels compose-ckpt \
    && rm -rf /tmp/wheels

ENV PATH=/opt/compose-ckpt/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COMPOSE_CKPT_HOME=/var/lib/compose-ckpt
EXPOSE 9321
ENTRYPOINT ["compose-ckpt-sidecar"]
CMD ["serve"]
