//! Per-API call counters and runtime fault injection.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The AWS operations the emulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Api {
    /// IAM Roles Anywhere `CreateSession`.
    CreateSession,
    /// Redshift `GetClusterCredentials`.
    GetClusterCredentials,
    /// Redshift `GetClusterCredentialsWithIAM`.
    #[serde(rename = "GetClusterCredentialsWithIAM")]
    GetClusterCredentialsWithIam,
    /// Redshift Serverless `GetCredentials`.
    GetCredentials,
}

impl Api {
    /// All operations, in a stable order.
    pub const ALL: [Api; 4] = [
        Api::CreateSession,
        Api::GetClusterCredentials,
        Api::GetClusterCredentialsWithIam,
        Api::GetCredentials,
    ];

    /// The operation's AWS name.
    pub fn name(self) -> &'static str {
        match self {
            Api::CreateSession => "CreateSession",
            Api::GetClusterCredentials => "GetClusterCredentials",
            Api::GetClusterCredentialsWithIam => "GetClusterCredentialsWithIAM",
            Api::GetCredentials => "GetCredentials",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Number of calls per API, successful and failed (including injected faults).
#[derive(Debug, Default)]
pub(crate) struct CallCounters {
    counts: [AtomicU64; Api::ALL.len()],
}

impl CallCounters {
    pub(crate) fn record(&self, api: Api) {
        self.counts[api.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self, api: Api) -> u64 {
        self.counts[api.index()].load(Ordering::Relaxed)
    }
}

/// "The next N calls" budget of one fault kind: a global budget plus one per API. A call
/// consumes from its API's budget first, then from the global one.
#[derive(Debug, Default)]
struct Budget {
    any: AtomicU64,
    per_api: [AtomicU64; Api::ALL.len()],
}

impl Budget {
    fn slot(&self, api: Option<Api>) -> &AtomicU64 {
        match api {
            Some(api) => &self.per_api[api.index()],
            None => &self.any,
        }
    }

    fn set(&self, api: Option<Api>, n: u64) {
        self.slot(api).store(n, Ordering::SeqCst);
    }

    fn take(&self, api: Api) -> bool {
        take_one(&self.per_api[api.index()]) || take_one(&self.any)
    }

    fn clear(&self) {
        self.any.store(0, Ordering::SeqCst);
        for slot in &self.per_api {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

fn take_one(counter: &AtomicU64) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What happens to one call, decided when it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Close the connection without any response.
    DropConnection,
    /// Answer with the service's throttling error.
    Throttle,
    /// Answer with a server error (5xx).
    ServerError,
    /// Answer 200 with a body that is not the service's format.
    Malformed,
}

/// Faults injected into the emulator at runtime (shared by all connections).
///
/// Latency applies to every API call; the "next N" budgets are consumed one per call, either
/// for a given API or for any API (`api = None`).
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    api_latency_ms: [AtomicU64; Api::ALL.len()],
    drop: Budget,
    throttle: Budget,
    server_error: Budget,
    malformed: Budget,
}

impl Faults {
    /// Delay every API call by `latency` before it is processed.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    /// The latency currently added to each call.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::SeqCst))
    }

    /// Delay every call of `api` by `latency`, on top of [`Faults::set_latency`]'s (a slow
    /// credential API while the others answer at once).
    pub fn set_api_latency(&self, api: Api, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.api_latency_ms[api.index()].store(ms, Ordering::SeqCst);
    }

    /// The latency a call of `api` suffers.
    pub fn latency_of(&self, api: Api) -> Duration {
        self.latency()
            + Duration::from_millis(self.api_latency_ms[api.index()].load(Ordering::SeqCst))
    }

    /// Answer the next `n` calls (of `api`, or of any API) with a throttling error
    /// (`ThrottlingException`/400, Redshift `Throttling`/400).
    pub fn throttle_next(&self, api: Option<Api>, n: u64) {
        self.throttle.set(api, n);
    }

    /// Answer the next `n` calls with a server error (`InternalFailure`/500 for the JSON
    /// services, `ServiceUnavailable`/503 for Redshift).
    pub fn fail_next(&self, api: Option<Api>, n: u64) {
        self.server_error.set(api, n);
    }

    /// Close the connection of the next `n` calls after reading the request, without a
    /// response.
    pub fn drop_next(&self, api: Option<Api>, n: u64) {
        self.drop.set(api, n);
    }

    /// Answer the next `n` calls with HTTP 200 and a body that is not the service's format
    /// (neither its XML nor its JSON).
    pub fn malformed_next(&self, api: Option<Api>, n: u64) {
        self.malformed.set(api, n);
    }

    /// Remove all faults (latency and budgets).
    pub fn clear(&self) {
        self.latency_ms.store(0, Ordering::SeqCst);
        for slot in &self.api_latency_ms {
            slot.store(0, Ordering::SeqCst);
        }
        self.drop.clear();
        self.throttle.clear();
        self.server_error.clear();
        self.malformed.clear();
    }

    /// The fault, if any, that the arriving call of `api` suffers. Consumes budget.
    pub(crate) fn take(&self, api: Api) -> Option<Fault> {
        if self.drop.take(api) {
            Some(Fault::DropConnection)
        } else if self.throttle.take(api) {
            Some(Fault::Throttle)
        } else if self.server_error.take(api) {
            Some(Fault::ServerError)
        } else if self.malformed.take(api) {
            Some(Fault::Malformed)
        } else {
            None
        }
    }
}

/// JSON body of `POST /_emulator/faults` (the control endpoint used by other processes).
/// Absent fields leave the corresponding setting unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsRequest {
    /// Restrict the budgets below to one API.
    #[serde(default)]
    pub api: Option<Api>,
    #[serde(default)]
    pub latency_ms: Option<u64>,
    #[serde(default)]
    pub throttle_next: Option<u64>,
    #[serde(default)]
    pub fail_next: Option<u64>,
    #[serde(default)]
    pub drop_next: Option<u64>,
    #[serde(default)]
    pub malformed_next: Option<u64>,
}

impl FaultsRequest {
    pub(crate) fn apply(&self, faults: &Faults) {
        if let Some(ms) = self.latency_ms {
            faults.set_latency(Duration::from_millis(ms));
        }
        if let Some(n) = self.throttle_next {
            faults.throttle_next(self.api, n);
        }
        if let Some(n) = self.fail_next {
            faults.fail_next(self.api, n);
        }
        if let Some(n) = self.drop_next {
            faults.drop_next(self.api, n);
        }
        if let Some(n) = self.malformed_next {
            faults.malformed_next(self.api, n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_specific_budget_is_consumed_before_the_global_one() {
        let faults = Faults::default();
        faults.throttle_next(Some(Api::GetCredentials), 1);
        faults.throttle_next(None, 1);
        assert_eq!(faults.take(Api::GetCredentials), Some(Fault::Throttle));
        assert_eq!(faults.take(Api::CreateSession), Some(Fault::Throttle));
        assert_eq!(faults.take(Api::GetCredentials), None);
    }

    #[test]
    fn budget_for_one_api_leaves_others_alone() {
        let faults = Faults::default();
        faults.drop_next(Some(Api::CreateSession), 2);
        assert_eq!(faults.take(Api::GetClusterCredentials), None);
        assert_eq!(faults.take(Api::CreateSession), Some(Fault::DropConnection));
        assert_eq!(faults.take(Api::CreateSession), Some(Fault::DropConnection));
        assert_eq!(faults.take(Api::CreateSession), None);
    }

    #[test]
    fn clear_removes_everything() {
        let faults = Faults::default();
        faults.set_latency(Duration::from_millis(50));
        faults.fail_next(None, 5);
        faults.clear();
        assert_eq!(faults.latency(), Duration::ZERO);
        assert_eq!(faults.take(Api::GetCredentials), None);
    }
}
