"""`[identity.saml]` and `[identity.scim]` refuse settings that could not work or would be unsafe,
with a message naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from callgate.identity.settings import SamlSettings, ScimSettings

SAML = {
    "enabled": True, "idp_metadata_file": Path("/etc/callgate/idp.xml"),
    "sp_entity_id": "https://callgate.example.com/api/saml/metadata",
    "acs_url": "https://callgate.example.com/api/saml/acs",
}  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"idp_metadata_file": None}, "idp_metadata_file"),
        ({"sp_entity_id": ""}, "sp_entity_id is needed"),
        ({"acs_url": "http://callgate.example.com/api/saml/acs"}, "acs_url must be an https://"),
        ({"default_role": "root"}, "default_role"),
        ({"role_map": {"x": "root"}}, "role"),
    ],
)
def test_saml_settings_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        SamlSettings.model_validate({**SAML, **changes})
    assert message in str(caught.value)


def test_saml_settings_accepted() -> None:
    assert SamlSettings.model_validate(SAML).acs_url.endswith("/acs")
    loopback = SamlSettings.model_validate(
        {**SAML, "acs_url": "http://127.0.0.1:8080/api/saml/acs"}
    )
    assert loopback.clock_skew_s == 60
    assert not SamlSettings().enabled  # off needs nothing


def test_scim_token_must_be_long() -> None:
    with pytest.raises(ValidationError) as caught:
        ScimSettings.model_validate({"enabled": True, "token": "short"})
    assert "at least 32 characters" in str(caught.value)
    assert ScimSettings.model_validate({"enabled": True, "token": "t" * 32}).enabled
    with pytest.raises(ValidationError):
        ScimSettings.model_validate({"enabled": True, "token": "t" * 40, "max_results": 0})
