"""Arbitrary .env content never crashes config-check: it reports findings or passes."""

from __future__ import annotations

import os
import shutil

from hypothesis import HealthCheck, given, settings, strategies as st

from posthog_compose.configuration import checks, manifest as manifest_module
from tests.conftest import REPO, copy_repository

NAMES = [v.name for v in manifest_module.load(REPO).variables] + ["UNKNOWN_THING", "export WEB_PORT", "#", ""]
line = st.one_of(
    st.text(max_size=60),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(NAMES), st.text(max_size=60)),
    st.builds(lambda k, q, v: f"{k}={q}{v}{q}", st.sampled_from(NAMES), st.sampled_from(["'", '"', ""]),
              st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(line, max_size=25), binary=st.binary(max_size=40))
def test_arbitrary_env_never_crashes(tmp_path_factory, lines, binary):
    root = tmp_path_factory.mktemp("fuzz")
    copy_repository(root)
    env = root / ".env"
    data = "\n".join(lines).encode("utf-8", "surrogatepass") if all(
        "\ud800" > c or c > "\udfff" for l in lines for c in l) else b""
    env.write_bytes(data + (binary if len(lines) % 3 == 0 else b""))
    os.chmod(env, 0o600)
    findings = checks.collect(root, environ={"PATH": os.environ["PATH"]})
    assert all(f.severity in ("error", "warning") and "\n" not in f.text() for f in findings)
    shutil.rmtree(root)
