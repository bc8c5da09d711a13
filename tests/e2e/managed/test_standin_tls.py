"""The PostHog stand-in's reading of DATABASE_URL / REDIS_URL TLS settings (images/posthog-standin/
datastores_tls.py), without an engine: the plugin server's node-postgres verifies whenever any ssl
parameter is present, `disable` and no parameter mean plaintext, sslrootcert becomes the only CA;
Celery refuses rediss:// without ssl_cert_reqs; certificate names match as libpq before 15 and Node do.
The end-to-end tests (test_external.py) then prove the same against the TLS-only managed servers."""

from __future__ import annotations

import importlib.util

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO

pytestmark = pytest.mark.lanes("local", reason="tests the PostHog stand-in's own code, without an engine")

_spec = importlib.util.spec_from_file_location(
    "standin_datastores_tls", REPO / "tests" / "e2e" / "images" / "posthog-standin" / "datastores_tls.py")
tls = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tls)

VERIFYING = ("prefer", "require", "verify-ca", "verify-full")
hosts = st.sampled_from(["db.example.internal", "10.1.2.3", "pg-1.provider.test"])


@pytest.fixture(scope="module", autouse=True)
def _bundles_in_tmp_path(tmp_path_factory):
    """The stand-in writes Node's CA bundle to a temporary file (inside its container, /tmp): here it
    goes under pytest's own folder, which is removed, instead of the machine's temporary folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tls.tempfile, "tempdir", str(tmp_path_factory.mktemp("node-ca")))
        yield


@pytest.fixture(autouse=True)
def _no_pgsslmode(monkeypatch):
    monkeypatch.delenv("PGSSLMODE", raising=False)
    monkeypatch.delenv("NODE_EXTRA_CA_CERTS", raising=False)


@settings(max_examples=60, deadline=None)
@given(host=hosts, mode=st.sampled_from(VERIFYING))
def test_node_postgres_verifies_for_every_mode_but_disable_and_no_verify(host, mode, tmp_path_factory):
    ca = tmp_path_factory.mktemp("ca") / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    options = tls.node_pg_options(f"postgres://u:p@{host}:5432/db?sslmode={mode}&sslrootcert={ca}")
    assert options == {"sslmode": "verify-full", "sslrootcert": str(ca)}


@settings(max_examples=30, deadline=None)
@given(host=hosts, query=st.sampled_from(["", "?sslmode=disable", "?application_name=x"]))
def test_node_postgres_speaks_plaintext_without_ssl_parameters_or_with_disable(host, query):
    assert tls.node_pg_options(f"postgres://u:p@{host}:5432/db{query}") == {"sslmode": "disable"}


def test_node_postgres_no_verify_is_unverified_tls_and_a_missing_rootcert_fails():
    assert tls.node_pg_options("postgres://u:p@h/db?sslmode=no-verify")["sslmode"] == "require"
    with pytest.raises(OSError):
        tls.node_pg_options("postgres://u:p@h/db?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")


def test_node_postgres_without_rootcert_trusts_node_cas_plus_extra(tmp_path, monkeypatch):
    extra = tmp_path / "extra.pem"
    extra.write_text("EXTRA-CA-MARKER\n")
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(extra))
    try:
        options = tls.node_pg_options("postgres://u:p@h/db?sslmode=require")
    except FileNotFoundError:
        pytest.skip("this machine has no system CA bundle (the stand-in image has one)")
    assert options["sslmode"] == "verify-full"
    with open(options["sslrootcert"]) as bundle:
        assert "EXTRA-CA-MARKER" in bundle.read()


@pytest.mark.parametrize("query, refused", [
    ("", True), ("?ssl_cert_reqs=CERT_REQUIRED", False), ("?ssl_cert_reqs=required", False),
    ("?ssl_cert_reqs=REQUIRED", True), ("?ssl_ca_certs=/ca.crt", True)])
def test_celery_refuses_rediss_without_a_valid_ssl_cert_reqs(query, refused, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", f"rediss://:pw@redis.example:6379/0{query}")
    if refused:
        with pytest.raises(SystemExit):
            tls.celery_check_redis_url()
        assert "must have parameter ssl_cert_reqs" in capsys.readouterr().out
    else:
        tls.celery_check_redis_url()
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis:6379/0")
    tls.celery_check_redis_url()  # plain redis:// is not Celery's TLS business


def _certificate(dns=(), ips=(), common=None):
    return {"subjectAltName": tuple(("DNS", d) for d in dns) + tuple(("IP Address", i) for i in ips),
            "subject": (((("commonName", common),),) if common else ())}


@pytest.mark.parametrize("host, certificate, libpq_ok, node_ok", [
    ("10.1.2.3", _certificate(dns=["db.internal"], ips=["10.1.2.3"]), False, True),  # libpq<15 ignores IP SANs
    ("10.1.2.3", _certificate(dns=["db.internal", "10.1.2.3"], ips=["10.1.2.3"]), True, True),
    ("10.1.2.3", _certificate(dns=["10.1.2.3"]), True, False),  # Node wants an IP SAN for an IP host
    ("10.1.2.3", _certificate(ips=["10.1.2.3"], common="10.1.2.3"), True, True),  # CN only without dNSName
    ("db.internal", _certificate(dns=["*.internal"]), True, True),
    ("a.db.internal", _certificate(dns=["*.internal"]), False, False),  # a wildcard covers one label
    ("db.internal", _certificate(dns=["other.internal"], common="db.internal"), False, False),
])
def test_certificate_names_match_as_the_real_clients_do(host, certificate, libpq_ok, node_ok, monkeypatch):
    monkeypatch.setattr(tls, "_server_certificate", lambda *args: certificate)
    monkeypatch.setattr(tls, "_NAME_CHECKED", {})
    assert (tls.check_peer_name(host, 5432, None, node=False) is None) is libpq_ok
    assert (tls.check_peer_name(host, 5432, None, node=True) is None) is node_ok


@settings(max_examples=100, deadline=None)
@given(label=st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
       domain=st.from_regex(r"[a-z]{1,8}\.[a-z]{2,5}", fullmatch=True))
def test_a_wildcard_matches_exactly_one_label(label, domain):
    assert tls._name_matches(f"{label}.{domain}", f"*.{domain}")
    assert not tls._name_matches(f"x.{label}.{domain}", f"*.{domain}")
    assert not tls._name_matches(domain, f"*.{domain}")
    assert tls._name_matches(f"{label}.{domain}".upper(), f"{label}.{domain}")

