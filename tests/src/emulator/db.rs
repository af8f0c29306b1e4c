//! Provisioning of database users in the PostgreSQL server behind a cluster/workgroup: the
//! temporary passwords handed out by the Redshift APIs become real PostgreSQL passwords with
//! `VALID UNTIL` = their expiration, so PostgreSQL itself refuses them afterwards.

use super::config::{PasswordHash, PgAdmin};
use postgres_protocol::escape::{escape_identifier, escape_literal};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;

/// PostgreSQL truncates longer identifiers, which would silently change the login name.
pub(crate) const MAX_ROLE_NAME_BYTES: usize = 63;

#[derive(Debug, thiserror::Error)]
pub(crate) enum DbError {
    #[error("cannot connect to the backing PostgreSQL at {host}:{port} as {user}: {source}")]
    Connect {
        host: String,
        port: u16,
        user: String,
        source: tokio_postgres::Error,
    },
    #[error("provisioning statement failed: {0}")]
    Statement(#[source] tokio_postgres::Error),
}

/// Whether a missing user is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Creation {
    /// `AutoCreate=true` / IAM-derived users: create the role if missing.
    AutoCreate,
    /// `AutoCreate=false`: never create; a missing user gets a password that cannot work.
    ExistingOnly,
}

/// A password handed out for one role, remembered so that concurrent holders keep working.
#[derive(Debug)]
struct Issued {
    password: SecretString,
    valid_until: OffsetDateTime,
}

#[derive(Debug, Default)]
struct TargetState {
    client: Option<tokio_postgres::Client>,
    issued: HashMap<String, Issued>,
}

/// One backing PostgreSQL server. Provisioning is serialized per server (one admin
/// connection, one lock), which also makes the "reuse the live password" logic race-free.
#[derive(Debug)]
pub(crate) struct DbTarget {
    admin: PgAdmin,
    state: Mutex<TargetState>,
}

impl DbTarget {
    pub(crate) fn new(admin: PgAdmin) -> Self {
        Self {
            admin,
            state: Mutex::new(TargetState::default()),
        }
    }

    /// Sets up `user` to log in until `expiration` and returns its password.
    ///
    /// PostgreSQL has one password per role while Redshift hands out independent
    /// credentials. So that earlier, still-valid credentials keep working, a live password
    /// is reused and its `VALID UNTIL` extended to the latest expiration handed out.
    pub(crate) async fn issue_password(
        &self,
        user: &str,
        creation: Creation,
        groups: &[String],
        expiration: OffsetDateTime,
    ) -> Result<SecretString, DbError> {
        let mut guard = self.state.lock().await;
        let TargetState { client, issued } = &mut *guard;
        let client = self.client(client).await?;

        let exists = role_exists(client, user).await?;
        if !exists {
            if creation == Creation::ExistingOnly {
                // Like Redshift: the API call succeeds, the login will fail.
                return Ok(random_password());
            }
            create_role(client, user, true).await?;
        }

        let now = OffsetDateTime::now_utc();
        let (password, valid_until) = match issued.get(user) {
            Some(issued) if exists && issued.valid_until > now => {
                (issued.password.clone(), issued.valid_until.max(expiration))
            }
            _ => (random_password(), expiration),
        };
        let verifier = match self.admin.password_hash {
            PasswordHash::ScramSha256 => {
                postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes())
            }
            PasswordHash::Md5 => {
                postgres_protocol::password::md5(password.expose_secret().as_bytes(), user)
            }
        };
        let statement = format!(
            "ALTER ROLE {} WITH LOGIN PASSWORD {} VALID UNTIL {}",
            escape_identifier(user),
            escape_literal(&verifier),
            escape_literal(&pg_timestamp(valid_until)),
        );
        client
            .batch_execute(&statement)
            .await
            .map_err(DbError::Statement)?;

        for group in self.admin.grant_roles.iter().chain(groups) {
            if !role_exists(client, group).await? {
                create_role(client, group, false).await?;
            }
            let grant = format!(
                "GRANT {} TO {}",
                escape_identifier(group),
                escape_identifier(user)
            );
            client
                .batch_execute(&grant)
                .await
                .map_err(DbError::Statement)?;
        }

        issued.insert(
            user.to_owned(),
            Issued {
                password: password.clone(),
                valid_until,
            },
        );
        Ok(password)
    }

    /// Makes every password issued so far expire now (simulates the passage of time).
    pub(crate) async fn expire_all(&self) -> Result<(), DbError> {
        let mut guard = self.state.lock().await;
        let TargetState { client, issued } = &mut *guard;
        let now = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        let users: Vec<String> = issued.keys().cloned().collect();
        if users.is_empty() {
            return Ok(());
        }
        let client = self.client(client).await?;
        for user in &users {
            let statement = format!(
                "ALTER ROLE {} VALID UNTIL {}",
                escape_identifier(user),
                escape_literal(&pg_timestamp(now))
            );
            client
                .batch_execute(&statement)
                .await
                .map_err(DbError::Statement)?;
        }
        for entry in issued.values_mut() {
            entry.valid_until = now;
        }
        Ok(())
    }

    /// The admin connection, (re)connecting if needed.
    async fn client<'s>(
        &self,
        slot: &'s mut Option<tokio_postgres::Client>,
    ) -> Result<&'s tokio_postgres::Client, DbError> {
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            _ => self.connect().await?,
        };
        Ok(slot.insert(client))
    }

    async fn connect(&self) -> Result<tokio_postgres::Client, DbError> {
        let (client, connection) = tokio_postgres::Config::new()
            .host(&self.admin.host)
            .port(self.admin.port)
            .user(&self.admin.user)
            .dbname(&self.admin.dbname)
            .application_name("aws-emulator")
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|source| DbError::Connect {
                host: self.admin.host.clone(),
                port: self.admin.port,
                user: self.admin.user.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::warn!(error = %err, "emulator admin connection to PostgreSQL ended");
            }
        });
        Ok(client)
    }
}

async fn role_exists(client: &tokio_postgres::Client, role: &str) -> Result<bool, DbError> {
    let row = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
            &[&role],
        )
        .await
        .map_err(DbError::Statement)?;
    Ok(row.is_some())
}

/// Creates a role; a concurrent creation by someone else is fine.
async fn create_role(
    client: &tokio_postgres::Client,
    role: &str,
    login: bool,
) -> Result<(), DbError> {
    let statement = format!(
        "CREATE ROLE {} {}",
        escape_identifier(role),
        if login { "LOGIN" } else { "NOLOGIN" }
    );
    match client.batch_execute(&statement).await {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
        Err(err) => Err(DbError::Statement(err)),
    }
}

/// A random password satisfying Redshift's rules (8–64 printable characters with upper- and
/// lowercase letters and a digit).
pub(crate) fn random_password() -> SecretString {
    loop {
        let candidate = super::sessions::random_string(32);
        let classes = [
            candidate.bytes().any(|b| b.is_ascii_uppercase()),
            candidate.bytes().any(|b| b.is_ascii_lowercase()),
            candidate.bytes().any(|b| b.is_ascii_digit()),
        ];
        if classes.iter().all(|&ok| ok) {
            return SecretString::from(candidate);
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS+00` (PostgreSQL timestamptz input).
fn pg_timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}+00",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_have_all_character_classes() {
        for _ in 0..100 {
            let password = random_password();
            let p = password.expose_secret();
            assert_eq!(p.len(), 32);
            assert!(p.bytes().any(|b| b.is_ascii_uppercase()));
            assert!(p.bytes().any(|b| b.is_ascii_lowercase()));
            assert!(p.bytes().any(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn pg_timestamp_is_utc() {
        let at = time::macros::datetime!(2024-03-04 05:06:07 +02:00);
        assert_eq!(pg_timestamp(at), "2024-03-04 03:06:07+00");
    }
}
