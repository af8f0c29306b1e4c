//! Listeners behind a load balancer (issue 16): `proxy_protocol` needs the balancers'
//! networks, only on TCP, and `proxy_protocol_from` means nothing without it.

use super::{cluster_target, parse, people_rule, problems};

const REST: &str = concat!(cluster_target!(), people_rule!());

fn listener(bind: &str, extra: &str) -> String {
    format!(
        "[[listener]]\nname = \"lb\"\nbind = \"{bind}\"\ntls_cert = \"s.pem\"\ntls_key = \"s.key\"\n\
         client_ca = \"ca.pem\"\n{extra}\n{REST}"
    )
}

#[test]
fn a_proxy_protocol_listener_names_the_balancers_it_trusts() {
    let config = parse(&listener(
        "0.0.0.0:5439",
        "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/16\", \"2001:db8::/64\", \"192.0.2.7\"]",
    ))
    .unwrap();
    let l = &config.listeners[0];
    assert!(l.proxy_protocol);
    let shown: Vec<String> = l
        .proxy_protocol_from
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(shown, ["10.0.0.0/16", "2001:db8::/64", "192.0.2.7/32"]);
    assert!(l.proxy_protocol_from[0].contains("10.0.200.1".parse().unwrap()));
}

#[test]
fn proxy_protocol_without_trusted_sources_or_on_a_socket_is_refused() {
    assert_eq!(
        problems(&listener("0.0.0.0:5439", "proxy_protocol = true")),
        [
            "listener[0].proxy_protocol_from: required with proxy_protocol = true: the networks \
          of the load balancers that send the header (anyone else could claim any client \
          address)"
        ]
    );
    assert_eq!(
        problems(&listener(
            "0.0.0.0:5439",
            "proxy_protocol_from = [\"10.0.0.0/8\"]"
        )),
        ["listener[0].proxy_protocol_from: only with proxy_protocol = true"]
    );
    let unix = "[[listener]]\nname = \"lb\"\nbind = \"unix:/run/p/.s.PGSQL.5439\"\n\
                client_auth = \"trust\"\ntrust_user = \"t\"\nproxy_protocol = true\n\
                proxy_protocol_from = [\"10.0.0.0/8\"]\n";
    let found = problems(&format!("{unix}{REST}"));
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("listener[0].proxy_protocol: only on TCP")),
        "{found:?}"
    );
}

#[test]
fn a_malformed_network_names_its_key() {
    let err = parse(&listener(
        "0.0.0.0:5439",
        "proxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/40\"]",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("listener[0].proxy_protocol_from"), "{err}");
    assert!(err.contains("\"10.0.0.0/40\" is not a network"), "{err}");
}
