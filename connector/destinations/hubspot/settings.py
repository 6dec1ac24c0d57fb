"""The `type: hubspot` destination's settings, as written under `destinations.<name>` in config.yaml."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator

from connector.destinations.base import DestinationSettings


class Settings(DestinationSettings):
    access_token: SecretStr = Field(description="the private app's access token, as ${HUBSPOT_ACCESS_TOKEN}")
    id_property: str = Field(default="leaditio_lead_id",
                             description="the unique property contacts are matched on: leaditio_lead_id "
                                         "(one contact per lead) or email (one contact per person)")
    object: str = Field(default="contacts", description="the CRM object leads become")
    requests_per_10s: int = Field(default=100, ge=1, le=1000,
                                  description="the account's burst limit: 100 (Free/Starter), 190 "
                                              "(Professional/Enterprise), 250 (API limit increase); shared "
                                              "by every process using the token, until HubSpot states its own")
    daily_limit: int | None = Field(default=None, ge=1,
                                    description="stop at this many requests a day, counted across every "
                                                "process using the token (HubSpot's daily limit is shared "
                                                "with every other private app of the account)")
    timeout: float = Field(default=30.0, gt=0, description="seconds to wait for one HubSpot answer")
    host: str = Field(default="https://api.hubapi.com", description="HubSpot's API; change only for tests")
    ca_bundle: str | None = Field(default=None, description="CA file for an intercepting proxy")
    client_side_validation: bool = Field(default=False,
                                         description="let the SDK check every request and answer against "
                                                     "HubSpot's API spec (tests)")
    property_group: str = Field(default="leaditio", description="where `crm setup` puts the custom properties")
    property_group_label: str = "Lead marketplace"
    account_timezone: str = Field(default="Africa/Johannesburg",
                                  description="the HubSpot account's time zone: the daily limit resets at "
                                              "its midnight")
    match_existing: bool | None = Field(
        default=None,
        description="read a contact before first writing it, so on_create/if_empty fields never overwrite a "
                    "contact that already existed; default: on when id_property is email")
    rate_window: float = Field(default=10.0, gt=0,
                               description="seconds of HubSpot's rolling window; change only for tests")
    portal_id: int | None = Field(default=None, ge=1,
                                  description="the account's Hub ID, for record links in speed-to-lead notices; "
                                              "default: asked from HubSpot once (account details)")
    ui_domain: str = Field(default="app.hubspot.com",
                           description="with portal_id: the domain people open HubSpot on (app-eu1.hubspot.com "
                                       "for an EU account)")
    rate_limit_retries: int = Field(default=3, ge=0,
                                    description="ignored (kept so older config files load): a 429 now holds "
                                                "every process sharing the token and the worker reschedules "
                                                "the batch after HubSpot's wait")

    @field_validator("account_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (example: Africa/Johannesburg)") from None
        return value

