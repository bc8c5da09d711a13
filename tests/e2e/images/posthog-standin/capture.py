"""PostHog 1.43's capture endpoint (STAND-IN, test only), served by bin/docker-server: the first hop of the
ingestion path (BOUNDARIES.md, "Ingestion path"). What it models, each at the 1.43.0 tag:

- the paths /e, /engage, /track, /capture, /batch, /s, with or without the slash (posthog/urls.py:155-160);
- the payload: the JSON body of a POST (posthog/utils.py:621-643; compression is not modelled), a batch
  under "batch" (posthog/api/capture.py:239-249), the token from api_key / token / $token /
  properties.token (posthog/api/utils.py:125-150), distinct_id from $distinct_id, properties.distinct_id
  or distinct_id (capture.py:151-169), an event without a name skipped (capture.py:371-383);
- the answers: 401 without a token (capture.py:208-221) or with one no project has (api/utils.py:252-278),
  400 for a bad payload, 503 when Kafka does not take the event (capture.py:303-339), else 200
  {"status": 1} (capture.py:342);
- the project looked up by posthog_team.api_token in PostgreSQL (api/utils.py:312-327); when PostgreSQL
  fails the events go to the dead letter queue and the answer is still 200 (capture.py:226-236, 274-294);
- one message per event to events_plugin_ingestion (KAFKA_PREFIX and KAFKA_EVENTS_PLUGIN_INGESTION_TOPIC
  honoured: posthog/settings/data_stores.py:128,142-149), keyed by sha256("team_id:distinct_id")
  (capture.py:402-411), its value parse_kafka_event_data's dict (capture.py:41-63), acknowledged within
  KAFKA_PRODUCE_ACK_TIMEOUT_SECONDS (10 by default: posthog/settings/web.py:262)."""
import hashlib
import json
import os
import uuid
from datetime import datetime, timezone

#: posthog/urls.py:155-160 (opt_slash_path: with or without the trailing slash).
CAPTURE_PATHS = ("e", "engage", "track", "capture", "batch", "s")

UNABLE_TO_STORE = ("Unable to store event. Please try again. If you are the owner of this app you can check the logs "
                   "for further details.")


def ingestion_topic(environ=None):
    """KAFKA_EVENTS_PLUGIN_INGESTION_TOPIC (posthog/settings/data_stores.py:142-149)."""
    environ = os.environ if environ is None else environ
    return environ.get("KAFKA_EVENTS_PLUGIN_INGESTION_TOPIC") or f"{environ.get('KAFKA_PREFIX', '')}events_plugin_ingestion"


def dead_letter_topic(environ=None):
    """KAFKA_DEAD_LETTER_QUEUE (posthog/kafka_client/topics.py:12)."""
    environ = os.environ if environ is None else environ
    return f"{environ.get('KAFKA_PREFIX', '')}events_dead_letter_queue"


def is_capture_path(path):
    return path.strip("/") in CAPTURE_PATHS


def error(detail, code, status=400, kind="validation_error"):
    """generate_exception_response (posthog/exceptions.py): the status and PostHog's error body."""
    return status, {"type": kind, "code": code, "detail": detail, "attr": None}


def get_token(data, query):
    """posthog/api/utils.py:125-150, for a JSON body (and ?token= / ?api_key= on a GET)."""
    token = query.get("token", [None])[0] or query.get("api_key", [None])[0]
    if token:
        return token
    if isinstance(data, list):
        data = data[0] if data else None
    if isinstance(data, dict):
        properties = data.get("properties")
        return (data.get("$token") or data.get("token") or data.get("api_key")
                or (properties.get("token") if isinstance(properties, dict) else None))
    return None


def get_distinct_id(event):
    """posthog/api/capture.py:151-169."""
    value = event.get("$distinct_id")
    if value is None:
        properties = event.get("properties")
        if properties is not None and not isinstance(properties, dict):
            raise ValueError(f"Properties must be a JSON object, received {type(properties).__name__}!")
        value = (properties or {}).get("distinct_id", event.get("distinct_id"))
    if value is None:
        raise ValueError('All events must have the event field "distinct_id"!')
    if not value:
        raise ValueError('Event field "distinct_id" should not be blank!')
    return str(value)[:200]


def capture(path, query, body, site_url, ip, find_team, produce, now=None):
    """One request to a capture path: (status, answer). ``find_team(token)`` gives (team_id, anonymize_ips) or
    None and raises when PostgreSQL fails; ``produce(topic, key, value)`` raises when Kafka does not take it."""
    now = now or datetime.now(timezone.utc)
    try:
        data = json.loads(body.decode("utf-8")) if body else None
    except (UnicodeDecodeError, ValueError) as exc:
        return error(f"Malformed request data: {exc}", "invalid_payload")
    if not data:
        return error("No data found. Make sure to use a POST request when sending the payload in the body of the "
                     "request.", "no_data")
    token = get_token(data, query)
    if not token:
        return error("API key not provided. You can find your project API key in PostHog project settings.",
                     "missing_api_key", 401, "authentication_error")
    try:
        team = find_team(token)
        database_error = None
    except Exception as exc:  # noqa: BLE001 - posthog/api/utils.py:242-250: any failure to read the team
        team, database_error = None, repr(exc)
    if team is None and database_error is None:
        return error("Project API key invalid. You can find your project API key in PostHog project settings.",
                     "invalid_api_key", 401, "authentication_error")
    if isinstance(data, dict) and data.get("batch"):
        data = data["batch"]
    elif isinstance(data, dict) and "engage" in path:
        data["event"] = "$identify"
    events = data if isinstance(data, list) else [data]
    processed = []
    try:
        for event in events:
            if not isinstance(event, dict):
                raise ValueError("an event must be a JSON object")
            distinct_id = get_distinct_id(event)
            event_uuid = event.get("uuid") or str(uuid.uuid4())
            try:
                event_uuid = str(uuid.UUID(str(event_uuid)))
            except ValueError:
                raise ValueError('Event field "uuid" is not a valid UUID!')
            if not event.get("event"):
                continue  # parse_event: an event without a name is dropped
            if not event.get("properties"):
                event["properties"] = {}
            processed.append((event, event_uuid, distinct_id))
    except ValueError as exc:
        return error(f"Invalid payload: {exc}", "invalid_payload")
    team_id = team[0] if team else None
    anonymize = bool(team and team[1])
    for event, event_uuid, distinct_id in processed:
        message = {"uuid": event_uuid, "distinct_id": distinct_id, "ip": None if anonymize or database_error else ip,
                   "site_url": site_url, "data": json.dumps(event), "team_id": team_id, "now": now.isoformat(),
                   "sent_at": "", "token": token}
        try:
            if database_error:
                produce(dead_letter_topic(), None, json.dumps({**message, "error": f"Unable to fetch team from "
                                                               f"Postgres. Error: {database_error}"}))
                continue
            key = hashlib.sha256(f"{team_id}:{distinct_id}".encode()).hexdigest()
            produce(ingestion_topic(), key, json.dumps(message))
        except Exception:  # noqa: BLE001 - capture.py:303-339: any produce failure is a 503
            if database_error:
                continue  # log_event_to_dead_letter_queue swallows its own failure
            return error(UNABLE_TO_STORE, "server_error", 503, "server_error")
    return 200, {"status": 1}
