"""ClickHouse's version, read from its HTTPS interface with the verified TLS context.
"""

from __future__ import annotations

from posthog_compose.operations.doctor.network import _ProbeFailed


#: ClickHouse's HTTPS interface (what PostHog's HTTP client uses with CLICKHOUSE_SECURE): the version is asked
#: there; datastores.clickhouse_endpoint names it, this is the fallback.
CLICKHOUSE_HTTPS_PORT = 8443


def _clickhouse_version(host: str, port: int, context, values: dict[str, str], timeout: float) -> str:
    """`SELECT version()` over ClickHouse's HTTPS interface, with the user and password as headers."""
    import http.client

    connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    headers = {"X-ClickHouse-User": values.get("CLICKHOUSE_USER", "default") or "default",
               "X-ClickHouse-Key": values.get("CLICKHOUSE_PASSWORD", "")}
    try:
        connection.request("POST", "/", body=b"SELECT version()", headers=headers)
        response = connection.getresponse()
        body = response.read(4096).decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        import ssl

        if isinstance(exc, ssl.SSLCertVerificationError):
            raise _ProbeFailed(f"HTTPS port {port}: the certificate does not verify "
                               f"({exc.verify_message or exc.reason})", certificate=True)
        raise _ProbeFailed(f"HTTPS port {port} (where the version is asked) fails "
                           f"({getattr(exc, 'strerror', None) or getattr(exc, 'reason', None) or type(exc).__name__})")
    finally:
        connection.close()
    if response.status in (401, 403) or "Authentication failed" in body:
        raise _ProbeFailed(f"HTTPS port {port} refuses CLICKHOUSE_USER and CLICKHOUSE_PASSWORD")
    if response.status != 200:
        raise _ProbeFailed(f"HTTPS port {port} answers {response.status} to SELECT version()")
    return body.strip().splitlines()[0][:40] if body.strip() else "?"
