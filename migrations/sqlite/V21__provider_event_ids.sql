-- A Mailgun signature's token is taken once across tenants (Mailgun signs only a timestamp
-- and a token, so a token another tenant sharing the signing key saw must not carry a
-- forged event here): one row a token, whatever its tenant — a unique index, so that two
-- requests at once cannot both take it. Tokens recorded under several tenants before keep
-- their first. In step with migrations/postgres/V21__provider_event_ids.sql.
DELETE FROM provider_events
WHERE provider = 'mailgun-token'
  AND EXISTS (
    SELECT 1 FROM provider_events o
    WHERE o.provider = 'mailgun-token'
      AND o.event_id = provider_events.event_id
      AND (o.received_at < provider_events.received_at
           OR (o.received_at = provider_events.received_at AND o.tenant_id < provider_events.tenant_id))
  );
CREATE UNIQUE INDEX provider_events_one_mailgun_token ON provider_events(event_id)
WHERE provider = 'mailgun-token';
