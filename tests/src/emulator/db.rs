//! Database users in the PostgreSQL server behind a cluster/workgroup.
//!
//! Issuing a credential no longer touches PostgreSQL's passwords: the password lives in the
//! shared issued-credential store ([`crate::standin::issued`]) and the stand-in checks it.
//! PostgreSQL only needs the role to exist, because the stand-in logs in as that role over
//! the unix socket (trust). `AutoCreate=true` (and the IAM-derived `IAMR:` users) create it
//! if missing; `AutoCreate=false` never does, so a user that does not exist gets a
//! credential that cannot log in, as on Redshift.

use super::config::PgAdmin;
use crate::standin::pg_role_name;
use postgres_protocol::escape::escape_identifier;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;

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

/// One backing PostgreSQL server, administered through one connection.
#[derive(Debug)]
pub(crate) struct DbTarget {
    admin: PgAdmin,
    client: Mutex<Option<tokio_postgres::Client>>,
}

impl DbTarget {
    pub(crate) fn new(admin: PgAdmin) -> Self {
        Self {
            admin,
            client: Mutex::new(None),
        }
    }

    /// Creates the role of the Redshift user `user` (under its PostgreSQL name, see
    /// [`pg_role_name`]) if it does not exist. No password: the stand-in logs in for it.
    pub(crate) async fn create_user_if_missing(&self, user: &str) -> Result<(), DbError> {
        let role = pg_role_name(user);
        let mut slot = self.client.lock().await;
        let client = self.client(&mut slot).await?;
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .map_err(DbError::Statement)?
            .is_some();
        if exists {
            return Ok(());
        }
        match client
            .batch_execute(&format!("CREATE ROLE {} LOGIN", escape_identifier(&role)))
            .await
        {
            // Created concurrently by someone else: fine.
            Err(err) if err.code() == Some(&SqlState::DUPLICATE_OBJECT) => Ok(()),
            Err(err) => Err(DbError::Statement(err)),
            Ok(()) => Ok(()),
        }
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
