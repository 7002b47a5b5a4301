"""AWS SDK variables written in the ``.env`` file, handed to botocore explicitly.

boto3 reads only the process environment, but users of the shell version (and every
``.env`` user) write ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in the ``.env``. The
variables botocore reads are taken from botocore's own tables (not a hand list), kept out
of ``os.environ`` (children such as pg_dump never see them) and given to one botocore
session: credentials through its environment-credential providers, everything else as
session configuration. A variable set in the process environment wins over the ``.env``.
None of these values is ever logged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from botocore import configprovider
from botocore.credentials import ContainerProvider, EnvProvider
from botocore.session import Session as BotocoreSession

# credentials the environment provider reads; when the process environment names any of
# these (or a profile), it has chosen the credentials and the .env's are not used
CREDENTIALS = (EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY, *EnvProvider.TOKENS, EnvProvider.EXPIRY_TIME,
               "AWS_ACCOUNT_ID")
CONTAINER = (ContainerProvider.ENV_VAR, ContainerProvider.ENV_VAR_FULL, ContainerProvider.ENV_VAR_AUTH_TOKEN,
             "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
ENDPOINTS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")  # the service-specific one first, as botocore
REGION_ALIAS = "AWS_REGION"  # what the other AWS SDKs and the AWS CLI v2 docs use; botocore: AWS_DEFAULT_REGION
_CHOOSES_CREDENTIALS = (EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY, *EnvProvider.TOKENS, "AWS_PROFILE",
                        "AWS_DEFAULT_PROFILE")


def config_variables() -> dict[str, str]:
    """Environment variable -> botocore logical config name, from botocore's session table."""
    found: dict[str, str] = {}
    for logical, spec in configprovider.BOTOCORE_DEFAUT_SESSION_VARIABLES.items():
        names = spec[1]
        for name in [names] if isinstance(names, str) else list(names or []):
            found[name] = logical
    return found


def variables() -> frozenset[str]:
    """Every AWS variable that works from the .env file."""
    return frozenset({*CREDENTIALS, *CONTAINER, *ENDPOINTS, REGION_ALIAS, *config_variables()})


def from_env_file(file_values: Mapping[str, str | None], environ: Mapping[str, str]) -> dict[str, str]:
    """The AWS variables of the .env that apply: known, non-empty, and not overridden by the
    process environment (credentials as a group: the environment's choice wins)."""
    known = variables()
    chosen = {k: v for k, v in file_values.items() if k in known and v and k not in environ}
    if any(environ.get(name) for name in _CHOOSES_CREDENTIALS):
        for name in (*CREDENTIALS, "AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            chosen.pop(name, None)
    return chosen


def endpoint_url(aws_env: Mapping[str, str]) -> str | None:
    """AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL from the .env (botocore reads them only from the
    process environment), unless AWS_IGNORE_CONFIGURED_ENDPOINT_URLS says not to."""
    ignore = aws_env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS") or os.environ.get(
        "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "")
    if ignore.strip().lower() == "true":
        return None
    if any(os.environ.get(name) for name in ENDPOINTS):
        return None  # botocore reads the environment's own
    return next((aws_env[name] for name in ENDPOINTS if aws_env.get(name)), None)


def botocore_session(aws_env: Mapping[str, str]) -> BotocoreSession:
    """A botocore session that sees ``aws_env`` (from :func:`from_env_file`) as if it were in
    the process environment, below the real environment."""
    session = BotocoreSession()
    logical = config_variables()
    for name, value in aws_env.items():
        if name in logical:
            session.set_config_variable(logical[name], value)
    if REGION_ALIAS in aws_env and session.get_config_variable("region") is None:
        session.set_config_variable("region", aws_env[REGION_ALIAS])
    if any(name in aws_env for name in (*CREDENTIALS, *CONTAINER)):
        merged: dict[str, Any] = {**aws_env, **os.environ}
        resolver = session.get_component("credential_provider")
        for index, provider in enumerate(resolver.providers):
            if isinstance(provider, EnvProvider):
                resolver.providers[index] = EnvProvider(environ=merged)
            elif isinstance(provider, ContainerProvider):
                resolver.providers[index] = ContainerProvider(environ=merged)
    return session
