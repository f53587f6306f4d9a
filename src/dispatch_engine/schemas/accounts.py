"""Accounts, their incident contacts, and API keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from dispatch_engine.schemas.common import AccountId, StrictModel
from dispatch_engine.security.normalize import InvalidAddress, normalize_email, normalize_phone


class Contact(StrictModel):
    """A person reachable during incidents (account owner, admin, decision maker)."""

    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    phone: str | None = Field(default=None, description="E.164, e.g. +14155550100")

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_email(value)
        except InvalidAddress as exc:
            raise ValueError(exc.reason) from None

    @field_validator("phone")
    @classmethod
    def _phone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return normalize_phone(value)
        except InvalidAddress as exc:
            raise ValueError(exc.reason) from None


class AccountCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "acme",
                    "name": "Acme",
                    "owner": {
                        "name": "Olivia Owner",
                        "email": "owner@acme.example",
                        "phone": "+14155552671",
                    },
                    "admins": [{"name": "Adam Admin", "email": "admin@acme.example"}],
                }
            ]
        }
    )

    id: AccountId
    name: str = Field(min_length=1, max_length=200)
    owner: Contact | None = None
    admins: list[Contact] = Field(default_factory=list, max_length=50)
    decision_maker: Contact | None = None


class AccountPatch(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "Acme Inc",
                    "decision_maker": {"name": "Dana Decider", "email": "dana@acme.example"},
                }
            ]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    owner: Contact | None = None
    admins: list[Contact] | None = Field(default=None, max_length=50)
    decision_maker: Contact | None = None


class AccountOut(BaseModel):
    id: str
    name: str
    owner: Contact | None
    admins: list[Contact]
    decision_maker: Contact | None
    version: int
    created_at: datetime
    updated_at: datetime


Role = Literal["backend", "operator", "admin"]


class ApiKeyCreate(StrictModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"role": "backend", "account": "acme", "name": "EM production"}]
        }
    )

    role: Role
    account: AccountId | None = Field(
        default=None, description="Limit a backend key to one account (backend role only)."
    )
    name: str | None = Field(default=None, max_length=200)


class ApiKeyOut(BaseModel):
    id: str
    role: Role
    account: str | None
    name: str | None
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(description="The secret key. Shown once; store it now.")
