"""Settings, read from the environment; unset variables mean the embedded defaults.

Embedded defaults (for `make run` on a fresh machine): SQLite file, in-memory channel
layer, eager Celery, in-process presence store. Set `DATABASE_URL`, `REDIS_URL` and
`CELERY_BROKER_URL` to run on the real services. docs/operations.md lists every setting.
"""

import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from chatsite.limits import JSON_BYTES_PER_CHARACTER, JSON_ENVELOPE_BYTES, MAX_FRAME_BYTES

# Lets generic Django classes be subscripted at runtime (admin.ModelAdmin[Message]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Return the environment variable `name` read as a boolean (1/0, true/false, yes/no)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1 or 0).")


def env_int(name: str, default: int) -> int:
    """Return the environment variable `name` read as an integer."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from exc


def env_float(name: str, default: float) -> float:
    """Return the environment variable `name` read as a number."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from exc


def _gc_thresholds(raw: str) -> tuple[int, int, int]:
    """Parse `GATEWAY_GC_THRESHOLDS`: three positive integers, comma-separated."""
    try:
        values = tuple(int(part) for part in raw.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 1:
        raise ImproperlyConfigured(
            f"GATEWAY_GC_THRESHOLDS={raw!r} is not three positive integers (e.g. 50000,50,10)."
        )
    return values[0], values[1], values[2]


DEBUG = env_bool("DJANGO_DEBUG", True)

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0.")
    SECRET_KEY = "django-insecure-development-only-key-never-use-in-production-0123456789"  # noqa: S105 - debug only

ALLOWED_HOSTS = [
    h.strip()
    for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
    if h.strip()
]
if not DEBUG and "*" in ALLOWED_HOSTS:
    # A wildcard would let any Origin pass the WebSocket origin check (cross-site hijacking).
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list real hosts, not '*', in production.")

# Daphne's app makes `manage.py runserver` (`make run`) serve ASGI, WebSocket included.
# Loading it installs Twisted's reactor: about 0.3 s of start-up and 25 MB in every
# process that loads Django (gateways run uvicorn, workers and commands serve nothing),
# so only runserver loads it.
RUNSERVER = Path(sys.argv[0]).name == "manage.py" and sys.argv[1:2] == ["runserver"]

INSTALLED_APPS = [
    *(["daphne"] if RUNSERVER else []),
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "channels",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "accounts",
    "messaging",
    "presence",
]

MIDDLEWARE = [
    "chatsite.logs.RequestLogMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "chatsite.csp.content_security_policy",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
WSGI_APPLICATION = "chatsite.wsgi.application"
ASGI_APPLICATION = "chatsite.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# Database: DATABASE_URL (postgres://user@host:port/name) or the embedded SQLite file.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
# Connections to PostgreSQL per process are bounded by a pool (psycopg's, through Django):
# at most DB_POOL_SIZE, and a caller waits up to DB_POOL_TIMEOUT seconds for a free one
# (then `unavailable`) instead of opening more. Under ASGI every thread would otherwise
# keep a connection of its own, so a burst of REST requests opened a connection each
# and took PostgreSQL to max_connections. DB_POOL_SIZE=0: no pool, persistent
# connections per thread (DB_CONN_MAX_AGE), e.g. behind PgBouncer in transaction mode.
DB_POOL_SIZE = env_int("DB_POOL_SIZE", 10)
if DATABASE_URL:
    pooled = DB_POOL_SIZE > 0 and DATABASE_URL.startswith(("postgres://", "postgresql://"))
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=0 if pooled else env_int("DB_CONN_MAX_AGE", 60),
            # With the pool, health checks make it test a connection (one empty round
            # trip) before lending it: after a PostgreSQL restart or failover it replaces
            # its dead connections instead of handing each one out to fail a request.
            conn_health_checks=True,
        )
    }
    if pooled:
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": min(env_int("DB_POOL_MIN", 1), DB_POOL_SIZE),
            "max_size": DB_POOL_SIZE,
            "timeout": env_float("DB_POOL_TIMEOUT", 5.0),
            # A failed connection attempt is retried with a doubling delay for at most
            # this long, then given up (a request that waits starts a fresh one): after a
            # PostgreSQL outage the pool reconnects within a second or two, not after a
            # backoff grown during the outage.
            "reconnect_timeout": env_float("DB_POOL_RECONNECT_TIMEOUT", 2.0),
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
            # A long busy timeout: the embedded default serves WebSocket and HTTP from
            # several threads, and SQLite allows one writer at a time.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
# The statements every connect, send and receipt runs are prepared on each PostgreSQL
# connection, so they are planned once per connection and not per call.
# Turn off behind a pooler that cannot carry prepared statements from one transaction to
# the next (PgBouncer in transaction mode before 1.21, or without max_prepared_statements).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {})
    # Fail fast instead of hanging when PostgreSQL is down; callers answer `unavailable`.
    DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 3))
    if DB_PREPARED_STATEMENTS:
        # Lets psycopg prepare at all (Django turns it off). Django's own cursors bind
        # parameters on the client and never prepare: only `chatsite.sql.fetch_prepared`
        # asks for it.
        DATABASES["default"]["OPTIONS"].setdefault("prepare_threshold", 1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", str(BASE_DIR / "media")))
MEDIA_URL = "media/"
# Uploads: the local MEDIA_ROOT, or S3 (and S3-compatible stores) through django-storages
# when AWS_STORAGE_BUCKET_NAME is set; credentials come from boto3's usual sources.
AWS_STORAGE_BUCKET_NAME = os.environ.get("AWS_STORAGE_BUCKET_NAME", "")
DEFAULT_STORAGE: dict[str, Any] = (
    {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            # Private objects; downloads go through the membership-checking view.
            "default_acl": "private",
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
    if AWS_STORAGE_BUCKET_NAME
    else {"BACKEND": "django.core.files.storage.FileSystemStorage"}
)
# The archive of old messages (messaging/archive.py): a local folder, or an S3 bucket of
# its own (ARCHIVE_BUCKET; the same endpoint and credentials as the uploads' bucket).
ARCHIVE_ROOT = Path(os.environ.get("ARCHIVE_ROOT", str(BASE_DIR / "archive")))
ARCHIVE_BUCKET = os.environ.get("ARCHIVE_BUCKET", "")
ARCHIVE_STORAGE: dict[str, Any] = (
    {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": ARCHIVE_BUCKET,
            "location": os.environ.get("ARCHIVE_PREFIX", "archive"),
            "region_name": os.environ.get("AWS_S3_REGION_NAME") or None,
            "endpoint_url": os.environ.get("AWS_S3_ENDPOINT_URL") or None,
            "default_acl": "private",
            # Names are chosen by the archiver (they end in the content's hash).
            "file_overwrite": True,
        },
    }
    if ARCHIVE_BUCKET
    else {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": ARCHIVE_ROOT, "base_url": None},
    }
)
STORAGES: dict[str, dict[str, Any]] = {
    "default": DEFAULT_STORAGE,
    "archive": ARCHIVE_STORAGE,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# REST API (DRF) and JWT for native clients.
REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "chatsite.api.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SIMPLE_JWT: dict[str, Any] = {
    "ACCESS_TOKEN_LIFETIME": timedelta(seconds=env_int("JWT_ACCESS_SECONDS", 300)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env_int("JWT_REFRESH_DAYS", 30)),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    "UPDATE_LAST_LOGIN": False,
    "CHECK_REVOKE_TOKEN": True,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": SECRET_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# Redis: channel layer (fan-out between gateway processes) and presence store.
REDIS_URL = os.environ.get("REDIS_URL", "")
# Several Redis servers (comma-separated URLs): the channel layer's groups, presence,
# rate limits and tickets are spread over them by hash (chatsite/redis.py). REDIS_URL
# defaults to the first; without REDIS_SHARDS everything is on REDIS_URL.
REDIS_SHARDS = [u.strip() for u in os.environ.get("REDIS_SHARDS", "").split(",") if u.strip()]
if REDIS_SHARDS and not REDIS_URL:
    REDIS_URL = REDIS_SHARDS[0]
CHANNEL_LAYER_PREFIX = os.environ.get("CHANNEL_LAYER_PREFIX", "asgi")
if REDIS_URL:
    # Pub/sub with one group per conversation: chosen by measurement (chatsite/layers.py).
    CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
        "default": {
            "BACKEND": "chatsite.layers.BoundedPubSubChannelLayer",
            "CONFIG": {
                "hosts": REDIS_SHARDS or [REDIS_URL],
                "prefix": CHANNEL_LAYER_PREFIX,
                "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Celery: a broker URL means real workers; unset means tasks run eagerly in-process.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A task cut off by a lost broker connection may run again: ours re-read the database.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
# A worker's Prometheus metrics (messaging/taskmetrics.py): served on this port of
# WORKER_METRICS_ADDR when set (0: off). The worker imports the module that counts.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 0)
# All interfaces by default: Prometheus scrapes from another host (firewall the port).
WORKER_METRICS_ADDR = os.environ.get("WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104
CELERY_IMPORTS = ["messaging.taskmetrics"]
# Thumbnails decode images: their own queue, consumed by a worker of its own
# (`-Q thumbnails`), whose --concurrency bounds the images decoded at once.
CELERY_TASK_ROUTES = {"messaging.tasks.make_thumbnail_task": {"queue": "thumbnails"}}

PRESENCE_STORE = os.environ.get("PRESENCE_STORE", "redis" if REDIS_URL else "memory")

# Chat limits (published by the API; enforced by the services).
CHAT_MAX_MESSAGE_LENGTH = env_int("CHAT_MAX_MESSAGE_LENGTH", 100_000)
if CHAT_MAX_MESSAGE_LENGTH * JSON_BYTES_PER_CHARACTER + JSON_ENVELOPE_BYTES > MAX_FRAME_BYTES:
    # A message within the published limit must fit a WebSocket frame in any encoding.
    raise ImproperlyConfigured(
        f"CHAT_MAX_MESSAGE_LENGTH={CHAT_MAX_MESSAGE_LENGTH} does not fit the WebSocket frame "
        f"limit of {MAX_FRAME_BYTES} bytes at {JSON_BYTES_PER_CHARACTER} bytes a character; "
        f"the most is {(MAX_FRAME_BYTES - JSON_ENVELOPE_BYTES) // JSON_BYTES_PER_CHARACTER}."
    )
CHAT_MAX_GROUP_MEMBERS = env_int("CHAT_MAX_GROUP_MEMBERS", 1000)
CHAT_MAX_TITLE_LENGTH = 200
CHAT_MAX_DESCRIPTION_LENGTH = 2000
CHAT_MAX_ATTACHMENTS_PER_MESSAGE = env_int("CHAT_MAX_ATTACHMENTS_PER_MESSAGE", 10)
CHAT_FETCH_DEFAULT_LIMIT = 100
CHAT_FETCH_MAX_LIMIT = 200
# How long an on-commit broadcast may wait on the channel layer before it gives up
# (the message is already stored; clients repair the gap from the database).
CHAT_BROADCAST_TIMEOUT = env_float("CHAT_BROADCAST_TIMEOUT", 1.0)
# Events a gateway process may hold waiting for the channel layer before it drops some.
CHAT_FANOUT_QUEUE = env_int("CHAT_FANOUT_QUEUE", 10_000)

# Production hardening (DJANGO_DEBUG=0). DJANGO_HTTPS=0 is for plain HTTP on loopback.
HTTPS = env_bool("DJANGO_HTTPS", not DEBUG)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in os.environ.get("DJANGO_CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
if HTTPS:
    SECURE_SSL_REDIRECT = True
    # Probes and scrapes reach a gateway directly over plain HTTP, not through the proxy
    # that terminates TLS: they must get their answer, not a redirect. (`/metrics` is
    # answered before Django, chatsite/metrics.py; listed in case it ever moves.)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True

# Error reports: SENTRY_DSN turns on sentry-sdk in every process (Django views, Celery
# tasks, and every ERROR line logged, e.g. a frame handler that failed). No personal
# data is sent (user ids only through our own log fields).
SENTRY_DSN = os.environ.get("SENTRY_DSN", "")
if SENTRY_DSN:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    sentry_sdk.init(
        dsn=SENTRY_DSN,
        environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sample_rate=env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0),
        send_default_pii=False,
    )

LOG_CELERY_TASKS = env_bool("LOG_CELERY_TASKS", False)
# Logs: LOG_FORMAT=json writes one JSON object per line (chatsite/logs.py), else plain
# text; both carry the correlation id (`cid`). LOG_ACCESS: the level of the HTTP access
# log (one line per request, paths without query strings). LOG_TRACE=INFO adds the lines
# that follow each message from the sender's frame to every gateway that delivered it.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "cid": {"()": "chatsite.logs.CorrelationFilter"},
        "no_beat_ticks": {"()": "chatsite.logs.DropBeatTicks"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(process)d [%(cid)s] %(message)s"},
        "json": {"()": "chatsite.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["cid"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # A worker runs the notification tick every second: no line per task received
        # and done (failures are still logged, at ERROR) unless LOG_CELERY_TASKS=1.
        "celery.app.trace": {"level": "INFO" if LOG_CELERY_TASKS else "WARNING"},
        "celery.worker.strategy": {"level": "INFO" if LOG_CELERY_TASKS else "WARNING"},
        # Nor a line per tick sent by beat (its other lines stay).
        "celery.beat": {"filters": [] if LOG_CELERY_TASKS else ["no_beat_ticks"]},
        # No line per FCM/APNs request (failed pushes are logged by the notifications).
        "httpx": {"level": "WARNING"},
        "chat.access": {"level": os.environ.get("LOG_ACCESS", "INFO")},
        "chat.trace": {"level": os.environ.get("LOG_TRACE", "WARNING")},
    },
}

# Redis clients of our own (rate limits, tickets, presence): bounded on purpose.
REDIS_KEY_PREFIX = os.environ.get("REDIS_KEY_PREFIX", "chat")
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", 1.0)
# After Redis fails a rate-limit call, a process decides that Redis's limits with buckets
# of its own for this many seconds, then tries it again (chatsite/ratelimit.py).
RATE_LIMIT_REDIS_RETRY = env_float("RATE_LIMIT_REDIS_RETRY", 5.0)
REDIS_MAX_CONNECTIONS = env_int("REDIS_MAX_CONNECTIONS", 1000)
# The gateway's asyncio pool: callers wait up to REDIS_POOL_WAIT s for a free connection.
REDIS_ASYNC_POOL_SIZE = env_int("REDIS_ASYNC_POOL_SIZE", 64)
REDIS_POOL_WAIT = env_float("REDIS_POOL_WAIT", 5.0)

# Proxies in front of the gateways whose X-Forwarded-For entries are trusted for the
# client address (chatsite/clientaddr.py); 0: REMOTE_ADDR. A forged X-Forwarded-For
# must not pick the lockout or throttle bucket.
API_NUM_PROXIES = env_int("API_NUM_PROXIES", 0)
# The addresses (or networks) those proxies connect from: X-Forwarded-For is read only
# on a connection from one of them ("*": from anywhere). nginx on the gateway's host.
API_TRUSTED_PROXIES = [
    p.strip()
    for p in os.environ.get("API_TRUSTED_PROXIES", "127.0.0.1,::1").split(",")
    if p.strip()
]
# Failed logins (accounts/login.py; token buckets shared by all gateways through Redis),
# each a budget refilled over LOGIN_LOCKOUT_SECONDS: LOGIN_FAILURE_LIMIT per username
# and client address (LOGIN_STAFF_FAILURE_LIMIT at /admin/login/ on top), and
# LOGIN_ADDRESS_FAILURE_LIMIT per client address across usernames.
LOGIN_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
LOGIN_STAFF_FAILURE_LIMIT = env_int("LOGIN_STAFF_FAILURE_LIMIT", 3)
LOGIN_ADDRESS_FAILURE_LIMIT = env_int("LOGIN_ADDRESS_FAILURE_LIMIT", 20)
LOGIN_LOCKOUT_SECONDS = env_int("LOGIN_LOCKOUT_SECONDS", 900)
for _name in (
    "LOGIN_FAILURE_LIMIT",
    "LOGIN_STAFF_FAILURE_LIMIT",
    "LOGIN_ADDRESS_FAILURE_LIMIT",
    "LOGIN_LOCKOUT_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1.")
# Rate limits per user (token buckets shared by all gateways through Redis).
CHAT_SEND_RATE = env_float("CHAT_SEND_RATE", 5.0)
CHAT_SEND_BURST = env_float("CHAT_SEND_BURST", 20.0)
CHAT_REACT_RATE = env_float("CHAT_REACT_RATE", 5.0)
CHAT_REACT_BURST = env_float("CHAT_REACT_BURST", 20.0)
# Distinct emoji on one message (each member may use every one of them once).
CHAT_MAX_REACTIONS = env_int("CHAT_MAX_REACTIONS", 20)
CHAT_TYPING_RATE = env_float("CHAT_TYPING_RATE", 2.0)
CHAT_TYPING_BURST = env_float("CHAT_TYPING_BURST", 5.0)
CHAT_TYPING_MAX_MEMBERS = env_int("CHAT_TYPING_MAX_MEMBERS", 100)
CHAT_RECEIPT_COALESCE = env_float("CHAT_RECEIPT_COALESCE", 0.5)

# Per-socket frame budgets (docs/operations.md, "Security"): for each frame class, a rate
# per second and a burst, kept in the gateway's memory per socket. Past it a frame is
# answered `rate_limited` with `retry_after`. `message.send` is limited per user above.
_frame_budget_defaults = {
    "sync": (1.0, 5.0),
    "presence": (1.0, 5.0),
    "status": (1.0, 5.0),
    "fetch": (20.0, 100.0),
    "edit": (5.0, 20.0),
    "receipt": (20.0, 100.0),
    "typing": (10.0, 30.0),
    "ping": (3.0, 10.0),
}
WS_FRAME_BUDGETS = {
    name: (
        env_float(f"WS_{name.upper()}_RATE", rate),
        env_float(f"WS_{name.upper()}_BURST", burst),
    )
    for name, (rate, burst) in _frame_budget_defaults.items()
}
for _name, (_rate, _burst) in WS_FRAME_BUDGETS.items():
    if _rate <= 0 or _burst < 1:
        raise ImproperlyConfigured(
            f"WS_{_name.upper()}_RATE must be above 0 and WS_{_name.upper()}_BURST at least 1."
        )

# HTTP deadlines of a uvicorn gateway (chatsite/gateway/http.py): each request's line,
# headers and body must arrive within GATEWAY_REQUEST_TIMEOUT seconds of its first byte
# (the connection's, for the first request; GATEWAY_HANDSHAKE_TIMEOUT is its old name);
# a kept-alive connection idle for GATEWAY_KEEPALIVE_TIMEOUT seconds is closed.
GATEWAY_REQUEST_TIMEOUT = env_float(
    "GATEWAY_REQUEST_TIMEOUT", env_float("GATEWAY_HANDSHAKE_TIMEOUT", 20.0)
)
GATEWAY_KEEPALIVE_TIMEOUT = env_float("GATEWAY_KEEPALIVE_TIMEOUT", 5.0)

# The cyclic garbage collector's thresholds in a gateway process (`gc.set_threshold`).
# Python's (700, 10, 10) made a gateway holding 10,000 sockets (millions of objects)
# run a full collection every few seconds, up to 1.3 s each, a third of its CPU: more
# allocations between young collections let short-lived objects die first, so few
# reach the oldest generation (docs/performance.md, "Garbage collection").
GATEWAY_GC_THRESHOLDS = _gc_thresholds(os.environ.get("GATEWAY_GC_THRESHOLDS", "50000,50,10"))

# WebSocket gateway (docs/operations.md).
WS_HEARTBEAT_INTERVAL = env_float("WS_HEARTBEAT_INTERVAL", 25.0)
WS_IDLE_TIMEOUT_FACTOR = 3
WS_MAX_CONNECTIONS_PER_USER = env_int("WS_MAX_CONNECTIONS_PER_USER", 10)
WS_SEND_TIMEOUT = env_float("WS_SEND_TIMEOUT", 5.0)
# Graceful drain (chatsite/gateway/drain.py): on SIGTERM a gateway asks each socket to
# reconnect at a random moment within WS_DRAIN_SECONDS, closes (1012) whoever is still
# there WS_DRAIN_GRACE seconds after its moment, then exits. 0: no drain (close at once).
# The window grows past WS_DRAIN_SECONDS to keep the reconnects under WS_DRAIN_RATE a
# second (0: no such bound), up to WS_DRAIN_MAX_SECONDS.
WS_DRAIN_SECONDS = env_float("WS_DRAIN_SECONDS", 20.0)
WS_DRAIN_RATE = env_float("WS_DRAIN_RATE", 100.0)
WS_DRAIN_MAX_SECONDS = env_float("WS_DRAIN_MAX_SECONDS", 120.0)
WS_DRAIN_GRACE = env_float("WS_DRAIN_GRACE", 3.0)
WS_AUTH_CHECK_INTERVAL = env_float("WS_AUTH_CHECK_INTERVAL", 2.0)
# A gateway answers the pings of its sockets together: the log positions (and marker
# sums) asked for within this many seconds are read with one query (a 50th of a
# heartbeat, 0.5 s by default). The socket goes on with its frames and deliveries
# meanwhile; it is held only while the window's positions are read and its pong sent
# (chatsite.gateway.dbthreads.AnsweredInWindows).
WS_PING_WINDOW = env_float("WS_PING_WINDOW", WS_HEARTBEAT_INTERVAL / 50)
# ... of every socket, also those no recorded change names (a session reaching its
# expiry date): seconds between such full re-checks (accounts/credentials.py).
WS_AUTH_FULL_CHECK_INTERVAL = env_float("WS_AUTH_FULL_CHECK_INTERVAL", 60.0)
WS_GROUP_REFRESH_INTERVAL = env_float("WS_GROUP_REFRESH_INTERVAL", 3.0)
WS_TICKET_TTL = env_int("WS_TICKET_TTL", 30)
WS_DB_THREADS = env_int("WS_DB_THREADS", 8)
# A gateway stores the sends of its sockets with at most WS_SEND_WRITES statements at a
# time; sends that arrive meanwhile wait for one to end and go together in the next, at
# most WS_SEND_BATCH to a statement (services.send_messages). Two: under load sends are
# gathered (fewer commits: 13-35% less PostgreSQL CPU per message at 600-800 msg/s),
# and a statement held up (a conversation's lock, a Redis stall met by the rate limit)
# leaves the other lane. A Redis stall costs one rate-limit timeout per
# RATE_LIMIT_REDIS_RETRY, not one a send (chatsite/ratelimit.py). 1 and 1: one send at
# a time.
WS_SEND_WRITES = env_int("WS_SEND_WRITES", 2)
WS_SEND_BATCH = env_int("WS_SEND_BATCH", 32)
# A handshake whose database work has not started this many seconds after it reached the
# gateway is closed with 1013 unserved: its client stops waiting for `session.ready` after
# 10 s (docs/protocol.md) and has connected again. 0: never.
WS_READY_DEADLINE = env_float("WS_READY_DEADLINE", 10.0)

# Presence (docs/protocol.md): a connection is live for 3 heartbeats after its last
# written beat. A socket writes one at most every 1.2 heartbeats: every other ping of a
# client on the protocol's heartbeat, so the written beat is at most 2.4 heartbeats old
# while the client keeps pinging (a client slower than 1.2 heartbeats writes at each).
PRESENCE_WRITE_INTERVAL = env_float("PRESENCE_WRITE_INTERVAL", WS_HEARTBEAT_INTERVAL * 1.2)
# A gateway gathers its sockets' heartbeat writes for this long: one Redis round trip per
# shard per window (presence/beats.py); a 25th of a heartbeat, 1 s by default.
PRESENCE_WRITE_WINDOW = env_float("PRESENCE_WRITE_WINDOW", WS_HEARTBEAT_INTERVAL / 25)
PRESENCE_GRACE = env_float("PRESENCE_GRACE", 5.0)
PRESENCE_SWEEP_INTERVAL = env_float("PRESENCE_SWEEP_INTERVAL", 10.0)
PRESENCE_MAX_SUBSCRIPTIONS = env_int("PRESENCE_MAX_SUBSCRIPTIONS", 1000)

# --- REST API (issue 5): OpenAPI, throttles, uploads, search ------------------------------
# docs/protocol.md ("REST API") says what each of these does; /api/v1/server/limits
# publishes them.
INSTALLED_APPS += ["drf_spectacular", "drf_spectacular_sidecar"]
REST_FRAMEWORK.update(
    {
        "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
        # JSON bodies are read with a size cap (DRF's own parser reads without one).
        "DEFAULT_PARSER_CLASSES": ["chatsite.rest.BoundedJSONParser"],
        # Per signed-in user, in Redis; anonymous endpoints choose their own throttle.
        "DEFAULT_THROTTLE_CLASSES": ["chatsite.rest.UserThrottle"],
        # The same proxies as chatsite/clientaddr.py trusts (for DRF's own throttles).
        "NUM_PROXIES": API_NUM_PROXIES,
    }
)
SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "Chat API",
    "DESCRIPTION": (
        "REST API v1 of the chat service. Errors are "
        '`{"error": {"code", "message", "details"}}`; lists are cursor-paginated '
        "(`{results, next}`). The WebSocket protocol is described in docs/protocol.md."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "UserStatusEnum": "accounts.models.User.Status",
        "DevicePlatformEnum": "messaging.models.Device.Platform",
        "ConversationKindEnum": "messaging.models.Conversation.Kind",
        "MessageKindEnum": "messaging.models.Message.Kind",
        "DirectKindEnum": ["direct"],
        "GroupKindEnum": ["group"],
        "MemberRoleEnum": "messaging.models.Membership.Role",
        "SystemEventEnum": "messaging.wire.SYSTEM_EVENTS",
        "PostPolicyEnum": "messaging.models.Conversation.PostPolicy",
        "RoleChangeEnum": "messaging.api.serializers.ROLE_CHANGES",
        "NotificationReasonEnum": "messaging.models.Notification.Reason",
        "ReportReasonEnum": "messaging.models.Report.Reason",
    },
    # Swagger UI and Redoc from the drf-spectacular-sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
API_THROTTLE_RATE = env_float("API_THROTTLE_RATE", 20.0)
API_THROTTLE_BURST = env_float("API_THROTTLE_BURST", 200.0)
API_UPLOAD_RATE = env_float("API_UPLOAD_RATE", 1.0)
API_UPLOAD_BURST = env_float("API_UPLOAD_BURST", 20.0)
API_SEARCH_RATE = env_float("API_SEARCH_RATE", 2.0)
API_SEARCH_BURST = env_float("API_SEARCH_BURST", 20.0)
# Registrations per client address: a burst, then one every REGISTER_INTERVAL seconds.
REGISTRATION_OPEN = env_bool("REGISTRATION_OPEN", True)
REGISTER_BURST = env_float("REGISTER_BURST", 10.0)
REGISTER_INTERVAL = env_float("REGISTER_INTERVAL", 360.0)
API_PAGE_SIZE = env_int("API_PAGE_SIZE", 50)
API_MAX_PAGE_SIZE = 200
# A JSON body holds at most one message, however the client encodes it (up to 12 bytes
# a character, chatsite/limits.py).
API_MAX_JSON_BYTES = env_int(
    "API_MAX_JSON_BYTES",
    max(1 << 20, CHAT_MAX_MESSAGE_LENGTH * JSON_BYTES_PER_CHARACTER + JSON_ENVELOPE_BYTES),
)
# Attachments: the size is enforced while the upload is read; images over the pixel
# count are refused (a decompression bomb), smaller ones get a thumbnail.
CHAT_MAX_UPLOAD_BYTES = env_int("CHAT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
# An upload no message holds after this many hours is deleted (messaging/housekeeping.py).
CHAT_ORPHAN_UPLOAD_HOURS = env_int("CHAT_ORPHAN_UPLOAD_HOURS", 24)
CHAT_MAX_IMAGE_PIXELS = env_int("CHAT_MAX_IMAGE_PIXELS", 40_000_000)
# Decode cost: width x height x bytes per pixel (Pillow's, or the file's own when larger,
# e.g. 8 for 16-bit RGBA PNG), read from the header; over it an image is refused (413).
# 128 MiB takes an 8K (7680 x 4320) RGBA screenshot, 4096 x 4096 at 16-bit RGBA, and
# any baseline JPEG under the pixel limit (it decodes at a reduced scale); progressive
# JPEGs count their full-size coefficients (docs/operations.md, "Security").
CHAT_MAX_IMAGE_DECODE_BYTES = env_int("CHAT_MAX_IMAGE_DECODE_BYTES", 128 * 1024 * 1024)
CHAT_THUMBNAIL_SIZE = env_int("CHAT_THUMBNAIL_SIZE", 320)
# Images with a side longer than this are scaled down to it by the thumbnail worker
# (upright, metadata dropped); GIFs are kept as they are (animations).
CHAT_MAX_IMAGE_EDGE = env_int("CHAT_MAX_IMAGE_EDGE", 2048)
# The longest voice message, and the longest duration an audio or video upload may declare.
CHAT_MAX_VOICE_SECONDS = env_int("CHAT_MAX_VOICE_SECONDS", 300)
CHAT_MAX_MEDIA_SECONDS = env_int("CHAT_MAX_MEDIA_SECONDS", 6 * 3600)
CHAT_MAX_DEVICES_PER_USER = env_int("CHAT_MAX_DEVICES_PER_USER", 20)
# Search: PostgreSQL full text plus trigram matching; bounded in query size and time.
CHAT_SEARCH_MAX_QUERY_LENGTH = 200
CHAT_SEARCH_PAGE_SIZE = 20
CHAT_SEARCH_MAX_RESULTS = env_int("CHAT_SEARCH_MAX_RESULTS", 1000)
CHAT_SEARCH_TIMEOUT_MS = env_int("CHAT_SEARCH_TIMEOUT_MS", 5000)

# --- Notifications for members who are away (the worker decides; docs/operations.md) -----
# The VAPID key pair (base64url raw P-256: the 65-byte public point, the 32-byte private
# scalar; `manage.py vapid_keys` makes one) and the contact the push services see.
# Without a private key, Web Push devices get `provider_error` (one warning per worker).
WEBPUSH_VAPID_PUBLIC_KEY = os.environ.get("WEBPUSH_VAPID_PUBLIC_KEY", "")
WEBPUSH_VAPID_PRIVATE_KEY = os.environ.get("WEBPUSH_VAPID_PRIVATE_KEY", "")
WEBPUSH_VAPID_SUBJECT = os.environ.get("WEBPUSH_VAPID_SUBJECT", "mailto:admin@localhost")
# FCM HTTP v1 (Android): the service-account JSON from the Firebase console (its
# `project_id`, `client_email`, `private_key` and `token_uri` are used: OAuth 2 with an
# RS256 assertion, the token cached until it expires) and the API's origin (tests point
# it at a local server). Without a credentials file, FCM devices get `provider_error`
# (one warning per worker).
FCM_ENDPOINT = os.environ.get("FCM_ENDPOINT", "https://fcm.googleapis.com").rstrip("/")
FCM_CREDENTIALS_FILE = os.environ.get("FCM_CREDENTIALS_FILE", "")
# APNs (iOS) over HTTP/2 with token auth: the .p8 signing key, its key id and the Apple
# team id (the provider JWT is ES256, renewed every 50 minutes), the app's bundle id
# (`apns-topic`), the endpoint (api.sandbox.push.apple.com for development builds) and
# an optional CA bundle to trust instead of the system's (tests: a local server).
# Without key, key id, team id or topic, APNs devices get `provider_error`.
APNS_ENDPOINT = os.environ.get("APNS_ENDPOINT", "https://api.push.apple.com").rstrip("/")
APNS_KEY_FILE = os.environ.get("APNS_KEY_FILE", "")
APNS_KEY_ID = os.environ.get("APNS_KEY_ID", "")
APNS_TEAM_ID = os.environ.get("APNS_TEAM_ID", "")
APNS_TOPIC = os.environ.get("APNS_TOPIC", "")
APNS_CA_FILE = os.environ.get("APNS_CA_FILE", "")
# Seconds after a message commits before its notifications are decided, and before a
# missed-message email goes out. Off (no due rows written): NOTIFY_ENABLED=0.
NOTIFY_ENABLED = env_bool("NOTIFY_ENABLED", True)
NOTIFY_PUSH_DELAY = env_float("NOTIFY_PUSH_DELAY", 10.0)
NOTIFY_EMAIL_DELAY = env_float("NOTIFY_EMAIL_DELAY", 300.0)
# How often beat asks a worker to look for due work, and how long a claimed push or
# email may stay unanswered before another worker takes it over (a killed worker).
NOTIFY_POLL_INTERVAL = env_float("NOTIFY_POLL_INTERVAL", 1.0)
NOTIFY_LEASE = env_float("NOTIFY_LEASE", 30.0)
# Days the notification trace is kept.
NOTIFY_TRACE_DAYS = env_int("NOTIFY_TRACE_DAYS", 30)
# Origins accepted as push endpoints besides public https hosts (a private push service;
# tests use http://127.0.0.1:PORT): comma-separated `scheme://host[:port]`.
PUSH_ENDPOINT_ALLOW = [
    o.strip().rstrip("/") for o in os.environ.get("PUSH_ENDPOINT_ALLOW", "").split(",") if o.strip()
]
# Seconds to connect to, and then to hear from, a push service.
PUSH_TIMEOUT = env_float("PUSH_TIMEOUT", 5.0)
# Push requests a worker process has in flight at once (messaging.push.send_all): the
# devices of the windows one task sends, side by side on the process's clients.
PUSH_CONCURRENCY = env_int("PUSH_CONCURRENCY", 8)
# Seconds a push message waits at the push service for an offline device (Web Push TTL).
PUSH_TTL = env_int("PUSH_TTL", 4 * 3600)
# Links in emails and pushes start here (https in production).
SITE_URL = os.environ.get("SITE_URL", "http://127.0.0.1:8000").rstrip("/")
# Outgoing email (missed-message emails). Unset EMAIL_HOST: emails are written to the log.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "Chat <chat@localhost>")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
# Password reset by email (accounts/passwordreset.py): on when there is a mail server.
# Each request takes from a budget per client address and one per email: a burst, then
# one every ..._INTERVAL seconds. A link is good for PASSWORD_RESET_TIMEOUT seconds.
PASSWORD_RESET_ENABLED = env_bool("PASSWORD_RESET", bool(EMAIL_HOST))
PASSWORD_RESET_ADDRESS_BURST = env_float("PASSWORD_RESET_ADDRESS_BURST", 10.0)
PASSWORD_RESET_ADDRESS_INTERVAL = env_float("PASSWORD_RESET_ADDRESS_INTERVAL", 360.0)
PASSWORD_RESET_EMAIL_BURST = env_float("PASSWORD_RESET_EMAIL_BURST", 3.0)
PASSWORD_RESET_EMAIL_INTERVAL = env_float("PASSWORD_RESET_EMAIL_INTERVAL", 1200.0)
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3600)

# "Download my data" (GET /api/v1/me/export): a burst per user, then one per interval.
EXPORT_BURST = env_float("EXPORT_BURST", 3.0)
EXPORT_INTERVAL = env_float("EXPORT_INTERVAL", 3600.0)
# Retention: messages older than this many days are deleted (0: never), unless the
# conversation says otherwise (`Conversation.retention_days`); checked every
# RETENTION_INTERVAL seconds (`manage.py retention` does it at once).
DELETE_AFTER_DAYS = env_int("DELETE_AFTER_DAYS", 0)
RETENTION_INTERVAL = env_float("RETENTION_INTERVAL", 3600.0)
# Archiving (messaging/archive.py; `manage.py archive`): messages older than this many
# days move from the table into compressed segments in the archive storage (0: never),
# every ARCHIVE_INTERVAL seconds (nightly by default). A segment holds at most
# ARCHIVE_SEGMENT_MESSAGES messages and ARCHIVE_SEGMENT_BYTES bytes of JSON; a process
# keeps the last ARCHIVE_CACHE_SEGMENTS segments it read.
ARCHIVE_AFTER_DAYS = env_int("ARCHIVE_AFTER_DAYS", 0)
ARCHIVE_INTERVAL = env_float("ARCHIVE_INTERVAL", 86400.0)
ARCHIVE_SEGMENT_MESSAGES = env_int("ARCHIVE_SEGMENT_MESSAGES", 1000)
ARCHIVE_SEGMENT_BYTES = env_int("ARCHIVE_SEGMENT_BYTES", 8 * 1024 * 1024)
ARCHIVE_CACHE_SEGMENTS = env_int("ARCHIVE_CACHE_SEGMENTS", 32)
# Search reads at most this many of the newest archived segments of the conversations
# it searches (the archive has no search index).
ARCHIVE_SEARCH_SEGMENTS = env_int("ARCHIVE_SEARCH_SEGMENTS", 64)
for _name, _low in (
    ("ARCHIVE_AFTER_DAYS", 0),
    ("ARCHIVE_SEGMENT_MESSAGES", 1),
    ("ARCHIVE_SEGMENT_BYTES", 1024),
    ("ARCHIVE_CACHE_SEGMENTS", 0),
    ("ARCHIVE_SEARCH_SEGMENTS", 0),
):
    if globals()[_name] < _low:
        raise ImproperlyConfigured(f"{_name} must be at least {_low}.")
if ARCHIVE_INTERVAL <= 0:
    raise ImproperlyConfigured("ARCHIVE_INTERVAL must be a number of seconds above 0.")
# Seconds between housekeeping runs (messaging/housekeeping.py; `manage.py housekeeping`).
HOUSEKEEPING_INTERVAL = env_float("HOUSEKEEPING_INTERVAL", 3600.0)
# Celery beat: the notification tick, the trace clean-up, housekeeping.
CELERY_BEAT_SCHEDULE = {
    "notify-tick": {
        "task": "messaging.tasks.notify_tick_task",
        "schedule": NOTIFY_POLL_INTERVAL,
        # A tick nobody ran in time is replaced by the next one, not queued behind it.
        "options": {"expires": max(NOTIFY_POLL_INTERVAL * 5, 5.0)},
    },
    "notify-cleanup": {
        "task": "messaging.tasks.delete_old_notifications_task",
        "schedule": 3600.0,
    },
    "retention": {
        "task": "messaging.tasks.retention_task",
        "schedule": RETENTION_INTERVAL,
        "options": {"expires": RETENTION_INTERVAL},
    },
    "archive": {
        "task": "messaging.tasks.archive_task",
        "schedule": ARCHIVE_INTERVAL,
        "options": {"expires": ARCHIVE_INTERVAL},
    },
    # Expired tokens, sessions, spent revocations, uploads nobody sent.
    "housekeeping": {
        "task": "messaging.tasks.housekeeping_task",
        "schedule": HOUSEKEEPING_INTERVAL,
        "options": {"expires": HOUSEKEEPING_INTERVAL},
    },
}

# --- Web app (issue 6): the browser UI ---------------------------------------------------
