-- Provider events by provider and id over all tenants: a Mailgun signature's token is taken
-- once across tenants (Mailgun signs only a timestamp and a token, so a token another
-- tenant sharing the signing key saw must not carry a forged event here). In step with
-- migrations/postgres/V21__provider_event_ids.sql.
CREATE INDEX provider_events_by_id ON provider_events(provider, event_id);
