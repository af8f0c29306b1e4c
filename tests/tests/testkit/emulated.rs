//! The emulator the `emulator` and `redshift_credentials` tests start: one cluster and one
//! workgroup, stand-ins on one PostgreSQL, and one role that may do everything on Redshift.

use proxy_auth::aws::roles_anywhere::signer::SignerPem;
use proxy_auth::aws::roles_anywhere::X509Signer;
use proxy_testkit::emulator::{
    allow_all_redshift_policy, ClusterSpec, EmulatorConfig, PgAdmin, StandInSpec, WorkgroupSpec,
};
use proxy_testkit::pki::{ClientCert, TestPki};
use std::time::Duration;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";
pub const CLUSTER: &str = "analytics";
pub const WORKGROUP: &str = "adhoc-wg";
pub const WORKGROUP_ID: &str = "3741886a-223d-446f-a77c-a5d0e7b5ad32";

pub fn trust_anchor_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:trust-anchor/ta-1")
}

pub fn profile_arn() -> String {
    format!("arn:aws:rolesanywhere:{REGION}:{ACCOUNT}:profile/p-1")
}

/// The emulator's configuration: `pki`'s CA is the trust anchor, the cluster and workgroup
/// log in to `admin`'s PostgreSQL, and `role_arn` is the one role.
pub fn one_role_config(pki: &TestPki, role_arn: &str, admin: PgAdmin) -> EmulatorConfig {
    EmulatorConfig {
        trust_anchor_arn: trust_anchor_arn(),
        trust_anchor_ca_pem: Some(std::fs::read_to_string(pki.ca_cert_path()).unwrap()),
        trust_anchor_ca_file: None,
        profile_arn: profile_arn(),
        accept_role_session_name: false,
        role_arns: vec![role_arn.to_owned()],
        max_session_duration: Duration::from_secs(3600),
        cloudtrail_file: None,
        clusters: vec![ClusterSpec {
            identifier: CLUSTER.to_owned(),
            region: REGION.to_owned(),
            custom_domain_name: None,
            admin: admin.clone(),
            standin: StandInSpec::default(),
        }],
        workgroups: vec![WorkgroupSpec {
            name: WORKGROUP.to_owned(),
            id: WORKGROUP_ID.to_owned(),
            region: REGION.to_owned(),
            custom_domain_name: None,
            admin,
            standin: StandInSpec::default(),
        }],
        role_policies: [(role_arn.to_owned(), allow_all_redshift_policy())].into(),
    }
}

/// The proxy's own Roles Anywhere signer, with `cert` and its key.
pub fn proxy_signer(cert: &ClientCert) -> X509Signer {
    let certificate = std::fs::read(&cert.cert_pem).unwrap();
    let private_key = std::fs::read(&cert.key_pem).unwrap();
    X509Signer::from_pem(SignerPem {
        certificate: &certificate,
        private_key: &private_key,
        ..SignerPem::default()
    })
    .unwrap()
}
