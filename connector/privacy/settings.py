"""The `privacy:` block of the config file: retention, erasure, opt-outs, encryption at rest.

Plain data, imported by connector.config; nothing here builds anything.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from connector.durations import seconds

DAY = 86400.0


class CrmErasure(BaseModel):
    """How `connector forget --crm` erases a person in one destination."""

    model_config = ConfigDict(extra="forbid")

    action: Literal["delete", "anonymise", "none"] = Field(
        default="delete",
        description="delete: HubSpot's GDPR delete, Salesforce deletes the Lead, http calls `url`; anonymise "
                    "(Salesforce): overwrite `fields` instead; none: do not erase in this destination")
    fields: dict[str, Any] = Field(default_factory=dict,
                                   description="anonymise: CRM field -> the value written over it (null clears it)")
    url: str | None = Field(default=None, description="http: the URL called, with {crm_id}, {lead_key}, {lead_id} "
                                                      "filled in, e.g. https://crm.example.com/leads/{crm_id}")
    method: str = Field(default="DELETE", description="http: the method of that call")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="http: headers of that call "
                                                                            "(values from the environment)")


class PrivacyConfig(BaseModel):
    """What the connector keeps about people, for how long, and how it forgets them (docs/privacy.md)."""

    model_config = ConfigDict(extra="forbid")

    keep_personal_data: float = Field(default=30 * DAY, gt=0,
                                      description="after a lead is delivered (or skipped, or superseded) this long, "
                                                  "names, emails and phones in its stored bodies and errors are "
                                                  "replaced by markers (never while it waits to be delivered)")
    keep_dead_letters: float = Field(default=90 * DAY, gt=0,
                                     description="the same for dead letters, counted from when they became one")
    after_forget: Literal["refuse", "admit"] = Field(
        default="refuse",
        description="a new lead of a person erased by `connector forget`: refuse (stored without personal data, "
                    "not delivered, shown as skipped: forgotten) or admit (delivered as any lead)")
    opt_out_file: str | None = Field(default=None,
                                     description="a file of emails and phones (one a line, # comments) of people who "
                                                 "objected to direct marketing: their leads are stored without "
                                                 "personal data and not delivered (skipped: opted_out)")
    encryption_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Fernet keys from the environment, e.g. - ${CONNECTOR_ENCRYPTION_KEY}: the first encrypts "
                    "stored bodies and leads, all decrypt (rotation: put the new key first, then "
                    "`connector db rotate-key`); make one with `connector db new-key`")
    erase: dict[str, CrmErasure] = Field(default_factory=dict,
                                         description="destination name -> how `connector forget --crm` erases a "
                                                     "person there (default: delete where the CRM can)")

    @field_validator("keep_personal_data", "keep_dead_letters", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return seconds(value)

    def key_values(self) -> list[str]:
        return [k.get_secret_value() for k in self.encryption_keys if k.get_secret_value()]
