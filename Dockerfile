# One image for every process of the stack: gateway, admin panel, workers, migrate job.
# The process is chosen by the command (see docker-compose.yml and SPEC §2).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .

# Compressed static files for the admin (whitenoise); the key only satisfies settings here.
RUN SECRET_KEY=collectstatic-only GATEWAY_IGNORE_DOTENV=1 python manage.py collectstatic --noinput \
    && useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /app/var \
    && chown -R gateway /app/var

USER gateway
# .env is for development only: in a container the environment comes from compose/orchestrator.
ENV GATEWAY_IGNORE_DOTENV=1

EXPOSE 4200 4201
CMD ["gunicorn", "-c", "gateway_project/gunicorn.conf.py", "gateway_project.wsgi:application"]
