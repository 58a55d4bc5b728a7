"""Imports every built-in scheme module; each registers its schemes on import."""

from __future__ import annotations

from receiver.signatures import (  # noqa: F401  # imported for their registrations
    declarative,
    discord,
    github,
    gitlab,
    hub,
    linear,
    mailgun,
    paddle,
    sendgrid,
    shopify,
    slack,
    square,
    standard,
    stripe,
    twilio,
    unsigned,
    zoom,
)
