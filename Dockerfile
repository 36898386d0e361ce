# The image of oom-killer's workload: a stdlib-only Python memory hog, nothing else.
#
# BASE_IMAGE is any image with python3 (3.11 or newer) on its PATH. The default is the official slim image,
# pinned by digest so a rebuild gets the same bytes; CI builds with a base made from Debian packages instead.
ARG BASE_IMAGE=python:3.12-slim-bookworm@sha256:782412e85d0f0984994c290652577d4018aff08145c85b262bb63dc0c7522254
FROM ${BASE_IMAGE}

ARG BASE_IMAGE
LABEL org.opencontainers.image.title="oom-killer" \
      org.opencontainers.image.description="Grows its memory in steps until the kernel OOM-kills it, to test what a cluster does with an OOMKilled container. Not for production." \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# No bytecode is written (the root filesystem is read-only in the pod) and every line reaches the log at once.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

WORKDIR /app
COPY workload/ /app/workload/
# The bytecode made here, once: the root filesystem is read-only in the pod, so without it every start would compile
# the workload again, slower under a CPU limit, and with the compiler's garbage in the charge the kill is predicted
# from (freed as the hog grows, which moved the kill a step later than announced). Unchecked: the sources never change.
RUN python3 -m compileall -q --invalidation-mode unchecked-hash /app/workload

# A fixed numeric non-root user, so Kubernetes' runAsNonRoot can check it without a passwd entry.
USER 65532:65532

# -S: no site-packages; the workload is stdlib only, and site costs megabytes of baseline RSS.
ENTRYPOINT ["python3", "-S", "-m", "workload"]
