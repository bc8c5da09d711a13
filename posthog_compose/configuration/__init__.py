"""Configuration: what the operator declares and what the kit checks before anything runs -- the
manifest of variables, .env, value formats, config-check's rules, the PostHog contract, external
datastores, secrets and certificates."""
