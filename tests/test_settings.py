"""Settings from the environment: embedded defaults, production hardening, refusals."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; django.setup(); from django.conf import settings as s; "
    "print(json.dumps({'db': s.DATABASES['default']['ENGINE'], "
    "'layer': s.CHANNEL_LAYERS['default']['BACKEND'], 'eager': s.CELERY_TASK_ALWAYS_EAGER, "
    "'presence': s.PRESENCE_STORE, 'debug': s.DEBUG}))"
)
SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "PRESENCE_STORE")


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in SERVICE_VARS and not k.startswith("DJANGO_")
    }
    base["DJANGO_SETTINGS_MODULE"] = "chatsite.settings"
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def production_env(**extra: str) -> dict[str, str]:
    return {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "x7" * 30 + "-a-long-random-production-secret",
        "DJANGO_ALLOWED_HOSTS": "chat.example.com",
        **extra,
    }


def test_unset_environment_means_the_embedded_defaults() -> None:
    result = run({}, "-c", PROBE)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "db": "django.db.backends.sqlite3",
        "layer": "channels.layers.InMemoryChannelLayer",
        "eager": True,
        "presence": "memory",
        "debug": True,
    }


def test_service_urls_select_the_real_services() -> None:
    result = run(
        {
            "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
            "REDIS_URL": "redis://127.0.0.1:6379/0",
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/1",
        },
        "-c",
        PROBE,
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "db": "django.db.backends.postgresql",
        "layer": "chatsite.layers.BoundedPubSubChannelLayer",
        "eager": False,
        "presence": "redis",
        "debug": True,
    }


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = run(production_env(), "manage.py", "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_probes_and_scrapes_are_not_redirected_to_https() -> None:
    probe = (
        "import json, django; django.setup(); "
        "from django.middleware.security import SecurityMiddleware; "
        "from django.test import RequestFactory; "
        "m = SecurityMiddleware(lambda r: None); "
        "rf = RequestFactory(HTTP_HOST='chat.example.com'); "
        "print(json.dumps({p: m.process_request(rf.get(p)) is not None "
        "for p in ['/healthz', '/readyz', '/metrics', '/', '/healthz/x']}))"
    )
    result = run(production_env(), "-c", probe)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "/healthz": False,
        "/readyz": False,
        "/metrics": False,
        "/": True,
        "/healthz/x": True,
    }


def test_production_refuses_a_wildcard_allowed_host() -> None:
    result = run(production_env(DJANGO_ALLOWED_HOSTS="chat.example.com,*"), "manage.py", "check")

    assert result.returncode != 0
    assert "DJANGO_ALLOWED_HOSTS must list real hosts, not '*'" in result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    env = production_env()
    del env["DJANGO_SECRET_KEY"]

    result = run(env, "manage.py", "check")

    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set when DJANGO_DEBUG=0" in result.stderr


def test_a_malformed_boolean_is_a_clear_error() -> None:
    result = run({"DJANGO_DEBUG": "maybe"}, "manage.py", "check")

    assert result.returncode != 0
    assert "DJANGO_DEBUG='maybe' is not a boolean" in result.stderr


def test_archive_settings_out_of_range_are_a_clear_error() -> None:
    """Tried: a segment of 0 messages (it would mark history archived and move nothing)
    and a negative age."""
    result = run({"ARCHIVE_SEGMENT_MESSAGES": "0"}, "manage.py", "check")
    assert result.returncode != 0
    assert "ARCHIVE_SEGMENT_MESSAGES must be at least 1." in result.stderr
    result = run({"ARCHIVE_AFTER_DAYS": "-3"}, "manage.py", "check")
    assert result.returncode != 0
    assert "ARCHIVE_AFTER_DAYS must be at least 0." in result.stderr


def test_a_login_failure_limit_below_one_is_a_clear_error() -> None:
    result = run({"LOGIN_STAFF_FAILURE_LIMIT": "0"}, "manage.py", "check")

    assert result.returncode != 0
    assert "LOGIN_STAFF_FAILURE_LIMIT must be at least 1." in result.stderr


def test_frame_budgets_come_from_the_environment_and_a_zero_rate_is_a_clear_error() -> None:
    code = "from django.conf import settings; print(settings.WS_FRAME_BUDGETS['sync'])"
    tuned = run(
        {"WS_SYNC_RATE": "0.5", "WS_SYNC_BURST": "3"},
        "-c",
        f"import django; django.setup(); {code}",
    )
    refused = run({"WS_PING_RATE": "0"}, "manage.py", "check")

    assert tuned.returncode == 0, tuned.stderr
    assert tuned.stdout.strip() == "(0.5, 3.0)"
    assert refused.returncode != 0
    assert "WS_PING_RATE must be above 0 and WS_PING_BURST at least 1." in refused.stderr


def test_an_oversized_body_is_refused_before_django_reads_it() -> None:
    import asyncio

    from chatsite.bodylimit import BodySizeLimit, body_limit

    reached: list[str] = []

    async def app(scope: object, receive: object, send: object) -> None:
        reached.append("django")

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    too_big = str(body_limit() + 1).encode()
    scope = {"type": "http", "headers": [(b"content-length", too_big)]}
    asyncio.run(BodySizeLimit(app)(scope, receive, send))

    assert reached == []
    assert sent[0]["status"] == 413
    assert b"payload_too_large" in sent[1]["body"]  # type: ignore[operator]


def test_a_bucket_name_selects_s3_storage_for_uploads() -> None:
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "from django.core.files.storage import storages; "
        "print(json.dumps([s.STORAGES['default']['BACKEND'], type(storages['default']).__name__,"
        " s.STORAGES['default']['OPTIONS']['bucket_name']]))"
    )
    result = run(
        {"AWS_STORAGE_BUCKET_NAME": "chat-uploads", "AWS_S3_REGION_NAME": "eu-west-1"}, "-c", probe
    )

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        "storages.backends.s3.S3Storage",
        "S3Storage",
        "chat-uploads",
    ]


def test_a_gateway_sets_its_gc_thresholds_and_bad_ones_are_a_clear_error() -> None:
    """Tried: loading the gateway's application with the default and with a chosen
    setting; then two numbers, a word and a zero."""
    code = "import gc, chatsite.asgi; print(gc.get_threshold())"
    assert run({}, "-c", code).stdout.strip() == "(50000, 50, 10)"
    chosen = run({"GATEWAY_GC_THRESHOLDS": "700,10,10"}, "-c", code)
    assert chosen.stdout.strip() == "(700, 10, 10)"
    for raw in ("50000,50", "many,50,10", "50000,0,10"):
        result = run({"GATEWAY_GC_THRESHOLDS": raw}, "manage.py", "check")
        assert result.returncode != 0
        assert f"GATEWAY_GC_THRESHOLDS={raw!r} is not three positive integers" in result.stderr
