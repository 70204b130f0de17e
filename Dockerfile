# One image for both processes: `chainer web` (default) and `chainer worker`.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHAINER_RULES=/etc/chainer/rules.yaml

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY chainer/__init__.py chainer/__init__.py
RUN pip install .  && pip uninstall -y chainer

COPY chainer chainer
RUN pip install --no-deps . \
    && useradd --system --uid 10001 --home-dir /app chainer \
    && mkdir -p /etc/chainer
COPY rules.yaml /etc/chainer/rules.yaml

USER chainer
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
CMD ["chainer", "web", "--host", "0.0.0.0", "--port", "8000"]
