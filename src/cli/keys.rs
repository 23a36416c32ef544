//! `otpmint keys`: a new master key, the keyring re-wrapped under the active master key,
//! and a new data key with every stored secret re-encrypted under it — with what to set
//! again for each value that cannot be decrypted.

use clap::Subcommand;

use super::{service_msg, services, CliError};
use crate::config::Settings;
use crate::crypto::keyring::MasterKey;
use crate::storage::TenantSeal;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Print a new base64 master key
    Generate,
    /// Re-wrap the keyring stored under a key in crypto.previous_master_keys with the
    /// active master key (idempotent; safe to re-run after an interruption)
    Rotate,
    /// New data key; re-encrypt every stored secret under it (SMTP passwords, OAuth2, provider, webhook and transport secrets); resumable
    RotateDataKey,
}

/// `otpmint keys generate`: a new base64 master key on standard output (the binary runs it
/// before reading any configuration).
pub fn new_master_key() -> Result<(), CliError> {
    say!("{}", MasterKey::generate().to_base64())
}

pub(super) async fn keys(command: KeysCommand, settings: Settings) -> Result<(), CliError> {
    match command {
        KeysCommand::Generate => new_master_key(),
        KeysCommand::Rotate => {
            let r = services(settings)?
                .admin
                .rotate_master_key()
                .await
                .map_err(service_msg)?;
            for (id, n) in &r.rewrapped {
                say!("key id {id}: {n} re-wrapped")?;
            }
            say!(
                "key id {} (active): {} already under it",
                r.active_id,
                r.already_active
            )?;
            Ok(())
        }
        KeysCommand::RotateDataKey => {
            let r = services(settings)?
                .admin
                .rotate_data_key()
                .await
                .map_err(service_msg)?;
            say!(
                "data key version {} active{}; credentials (relay passwords and OAuth2 secrets, provider secrets): {} re-encrypted, {} already current; webhook secrets: {} re-encrypted",
                r.active_version,
                if r.started_new {
                    " (new)"
                } else {
                    " (resumed)"
                },
                r.reencrypted,
                r.already_current,
                r.webhook_secrets_reencrypted
            )?;
            for (id, which) in &r.undecryptable {
                let what = match which {
                    TenantSeal::SmtpPassword => "its relay's password or OAuth2 secrets cannot be decrypted; set them again (PATCH smtp)".to_string(),
                    TenantSeal::FallbackPassword => "its fallback relay's password or OAuth2 secrets cannot be decrypted; set them again (PATCH smtp_fallback)".to_string(),
                    TenantSeal::HttpSecret => "its HTTP transport's signing secret cannot be decrypted; remove the transport and set it again (DELETE, then PUT /v1/tenant/transport/http)".to_string(),
                    TenantSeal::ProviderSecrets(channel) => format!(
                        "its {0} provider's secrets cannot be decrypted; set them again (PUT /v1/tenant/providers/{0})",
                        channel.as_str()
                    ),
                    TenantSeal::DkimPrivate => "a DKIM private key cannot be decrypted; make a new key (POST /v1/tenant/dkim) and remove the old one".to_string(),
                };
                eprintln!("tenant {id}: {what}");
            }
            for id in &r.webhook_secrets_undecryptable {
                eprintln!(
                    "tenant {id}: its webhook secret cannot be decrypted; rotate it (POST /v1/tenant/webhook/rotate-secret)"
                );
            }
            Ok(())
        }
    }
}
