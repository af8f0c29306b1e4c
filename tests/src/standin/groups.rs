//! DbGroups for one session at a time.
//!
//! Redshift: `DbGroups` are "existing database groups that the user named in DbUser will
//! join for the current session" (API_GetClusterCredentials; research redshift-server.md
//! §7). PostgreSQL 15 has no per-session role membership, so the stand-in GRANTs each group
//! to the user when a session carrying it starts and REVOKEs it when the last session of
//! that (user, group) pair ends (a reference count). Limitation: two concurrent sessions of
//! one user with different groups share their memberships while both are open. A membership
//! the user already had (granted by someone else) is never revoked.

use super::names::pg_role_name;
use crate::emulator::PgAdmin;
use postgres_protocol::escape::escape_identifier;
use std::collections::HashMap;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub(crate) enum GroupError {
    #[error("cannot connect to PostgreSQL as {user}: {source}")]
    Connect {
        user: String,
        source: tokio_postgres::Error,
    },
    #[error("group statement failed: {0}")]
    Statement(#[from] tokio_postgres::Error),
}

#[derive(Debug, Clone, Copy)]
struct Held {
    sessions: usize,
    /// Whether the stand-in granted it (and so revokes it at the end).
    granted: bool,
}

#[derive(Default)]
struct State {
    client: Option<tokio_postgres::Client>,
    held: HashMap<(String, String), Held>,
}

/// Session-scoped group memberships of one PostgreSQL server, through one admin connection.
pub(crate) struct Groups {
    admin: PgAdmin,
    state: Mutex<State>,
}

impl Groups {
    pub(crate) fn new(admin: PgAdmin) -> Self {
        Groups {
            admin,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether the PostgreSQL role `role` exists.
    pub(crate) async fn role_exists(&self, role: &str) -> Result<bool, GroupError> {
        let mut state = self.state.lock().await;
        let client = self.client(&mut state.client).await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await?
            .is_some())
    }

    /// The first of `groups` that does not exist (as a PostgreSQL role).
    pub(crate) async fn first_missing(
        &self,
        groups: &[String],
    ) -> Result<Option<String>, GroupError> {
        if groups.is_empty() {
            return Ok(None);
        }
        let mut state = self.state.lock().await;
        let client = self.client(&mut state.client).await?;
        for group in groups {
            let exists = client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1",
                    &[&pg_role_name(group)],
                )
                .await?
                .is_some();
            if !exists {
                return Ok(Some(group.clone()));
            }
        }
        Ok(None)
    }

    /// `role` joins `groups` for one more session.
    pub(crate) async fn join(&self, role: &str, groups: &[String]) -> Result<(), GroupError> {
        if groups.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().await;
        let State { client, held } = &mut *state;
        let client = self.client(client).await?;
        for group in groups {
            let group = pg_role_name(group);
            let key = (role.to_owned(), group.clone());
            if let Some(entry) = held.get_mut(&key) {
                entry.sessions += 1;
                continue;
            }
            let member = client
                .query_opt(
                    "SELECT 1 FROM pg_catalog.pg_auth_members m \
                     JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
                     JOIN pg_catalog.pg_roles u ON u.oid = m.member \
                     WHERE g.rolname = $1 AND u.rolname = $2",
                    &[&group, &role],
                )
                .await?
                .is_some();
            if !member {
                client
                    .batch_execute(&format!(
                        "GRANT {} TO {}",
                        escape_identifier(&group),
                        escape_identifier(role)
                    ))
                    .await?;
            }
            held.insert(
                key,
                Held {
                    sessions: 1,
                    granted: !member,
                },
            );
        }
        Ok(())
    }

    /// One session of `role` that carried `groups` has ended.
    pub(crate) async fn leave(&self, role: &str, groups: &[String]) {
        if groups.is_empty() {
            return;
        }
        let mut state = self.state.lock().await;
        let State { client, held } = &mut *state;
        for group in groups {
            let group = pg_role_name(group);
            let key = (role.to_owned(), group.clone());
            let Some(entry) = held.get_mut(&key) else {
                continue;
            };
            entry.sessions -= 1;
            if entry.sessions > 0 {
                continue;
            }
            let granted = entry.granted;
            held.remove(&key);
            if !granted {
                continue;
            }
            let statement = format!(
                "REVOKE {} FROM {}",
                escape_identifier(&group),
                escape_identifier(role)
            );
            let result = match self.client(client).await {
                Ok(c) => c.batch_execute(&statement).await.map_err(GroupError::from),
                Err(e) => Err(e),
            };
            if let Err(err) = result {
                tracing::warn!(%role, %group, error = %err, "stand-in could not revoke a session group");
            }
        }
    }

    async fn client<'s>(
        &self,
        slot: &'s mut Option<tokio_postgres::Client>,
    ) -> Result<&'s tokio_postgres::Client, GroupError> {
        let client = match slot.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let (client, connection) = tokio_postgres::Config::new()
                    .host(&self.admin.host)
                    .port(self.admin.port)
                    .user(&self.admin.user)
                    .dbname(&self.admin.dbname)
                    .application_name("redshift-stand-in")
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|source| GroupError::Connect {
                        user: self.admin.user.clone(),
                        source,
                    })?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                client
            }
        };
        Ok(slot.insert(client))
    }
}
