"""Operate a self-hosted PostHog deployment on Docker Compose.

The package holds the logic behind tasks.py, one module per concern, grouped by flow:
configuration/ (what the operator declares and what is checked before anything runs),
operations/ (everything that acts on a deployment) and documents/ (generated files and the
handbook's hooks); the modules here (cli, errors, masking, hints, fileops) serve all three.
Modules import heavy libraries (PyYAML, jinja2, cryptography) inside functions so that
`invoke --list` stays instant.
"""

import os
from pathlib import Path

#: The deployment root: where docker-compose.yml, variables.yml and .env live. The checkout
#: itself unless POSTHOG_COMPOSE_ROOT points elsewhere (tests run tasks on copies of it).
ROOT = Path(os.environ.get("POSTHOG_COMPOSE_ROOT") or Path(__file__).resolve().parent.parent).resolve()
